"""pfsxport.lustre.parse_getstripe on the formats of /work/shared/LUSTRE.md."""
from __future__ import annotations

import pytest

from pfsxport.lustre import LayoutSource, parse_getstripe
from pfsxport.model import Component, StripeLayout

MiB = 1 << 20

# LUSTRE.md: `lfs getstripe -y` of a plain (v1/v3) file. No path line, no trailing blank line.
PLAIN = """\
lmm_stripe_count:  2
lmm_stripe_size:   1048576
lmm_pattern:       raid0
lmm_layout_gen:    0
lmm_stripe_offset: 1
lmm_objects:
      - l_ost_idx: 1
        l_fid:     0x100010000:0x2:0x0
      - l_ost_idx: 0
        l_fid:     0x100000000:0x3:0x0"""

# LUSTRE.md: `lfs getstripe -y` of a PFL/composite file
PFL = """\
lcm_layout_gen:    3
lcm_mirror_count:  1
lcm_entry_count:   2
components:
  - lcme_id:             1
    lcme_mirror_id:      0
    lcme_flags:          init
    lcme_extent.e_start: 0
    lcme_extent.e_end:   1048576
    sub_layout:
      lmm_stripe_count:  1
      lmm_stripe_size:   1048576
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: 0
      lmm_objects:
      - l_ost_idx: 0
        l_fid:     0x100000000:0x2:0x0
  - lcme_id:             2
    lcme_mirror_id:      0
    lcme_flags:          0
    lcme_extent.e_start: 1048576
    lcme_extent.e_end:   EOF
    sub_layout:
      lmm_stripe_count:  4
      lmm_stripe_size:   4194304
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: -1"""

# plain, with a pool and the -v extras (LUSTRE.md: "A pool adds lmm_pool", "-v adds lmm_magic, ...")
PLAIN_POOL_VERBOSE = """\
lmm_magic:         0x0BD30BD0
lmm_seq:           0x200000401
lmm_object_id:     0x1
lmm_fid:           [0x200000401:0x1:0x0]
lmm_stripe_count:  3
lmm_stripe_size:   4194304
lmm_pattern:       raid0
lmm_layout_gen:    0
lmm_stripe_offset: 7
lmm_pool:          flash
lmm_objects:
      - l_ost_idx: 7
        l_fid:     0x100070000:0x2:0x0
      - l_ost_idx: 8
        l_fid:     0x100080000:0x2:0x0
      - l_ost_idx: 9
        l_fid:     0x100090000:0x2:0x0"""

# Data-on-MDT: the first MiB on the MDT (pattern mdt, lmm_mdt_index, no objects), then OSTs
DOM = """\
lcm_layout_gen:    2
lcm_mirror_count:  1
lcm_entry_count:   2
components:
  - lcme_id:             1
    lcme_mirror_id:      0
    lcme_flags:          init
    lcme_extent.e_start: 0
    lcme_extent.e_end:   1048576
    sub_layout:
      lmm_stripe_count:  0
      lmm_stripe_size:   1048576
      lmm_pattern:       mdt
      lmm_layout_gen:    0
      lmm_stripe_offset: 0
      lmm_mdt_index:     0
  - lcme_id:             2
    lcme_mirror_id:      0
    lcme_flags:          init
    lcme_extent.e_start: 1048576
    lcme_extent.e_end:   EOF
    sub_layout:
      lmm_stripe_count:  2
      lmm_stripe_size:   1048576
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: 3
      lmm_objects:
      - l_ost_idx: 3
        l_fid:     0x100030000:0x5:0x0
      - l_ost_idx: 4
        l_fid:     0x100040000:0x5:0x0"""

# FLR: two mirrors; lcme_id = (mirror << 16) | n. Only mirror 1's extents describe the file.
FLR = """\
lcm_layout_gen:    4
lcm_mirror_count:  2
lcm_entry_count:   3
components:
  - lcme_id:             65537
    lcme_mirror_id:      1
    lcme_flags:          init
    lcme_extent.e_start: 0
    lcme_extent.e_end:   4194304
    sub_layout:
      lmm_stripe_count:  1
      lmm_stripe_size:   1048576
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: 0
      lmm_objects:
      - l_ost_idx: 0
        l_fid:     0x100000000:0x6:0x0
  - lcme_id:             65538
    lcme_mirror_id:      1
    lcme_flags:          init
    lcme_extent.e_start: 4194304
    lcme_extent.e_end:   EOF
    sub_layout:
      lmm_stripe_count:  2
      lmm_stripe_size:   2097152
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: 1
      lmm_objects:
      - l_ost_idx: 1
        l_fid:     0x100010000:0x6:0x0
      - l_ost_idx: 2
        l_fid:     0x100020000:0x6:0x0
  - lcme_id:             131073
    lcme_mirror_id:      2
    lcme_flags:          init,stale
    lcme_timestamp:      1700000000
    lcme_extent.e_start: 0
    lcme_extent.e_end:   EOF
    sub_layout:
      lmm_stripe_count:  1
      lmm_stripe_size:   8388608
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: 5
      lmm_objects:
      - l_ost_idx: 5
        l_fid:     0x100050000:0x6:0x0"""

# the default (non-YAML) object lines: "-   0: { l_ost_idx:   0, l_fid: [...] }" (current) and
# "- 0: { l_ost_idx: 0, l_fid: [...] }" (older releases)
DEFAULT_PLAIN = """\
lmm_stripe_count:  2
lmm_stripe_size:   1048576
lmm_pattern:       raid0
lmm_layout_gen:    0
lmm_stripe_offset: 6
lmm_objects:
      -   0: { l_ost_idx:   6, l_fid: [0x240000400:0x1822:0x0] }
      -   1: { l_ost_idx:  12, l_fid: [0x280000400:0x1822:0x0] }"""

DEFAULT_PLAIN_OLD = """\
lmm_stripe_count:  2
lmm_stripe_size:   2097152
lmm_pattern:       1
lmm_layout_gen:    0
lmm_stripe_offset: 1
lmm_objects:
- 0: { l_ost_idx: 1, l_fid: [0x100010000:0x2:0x0] }
- 1: { l_ost_idx: 0, l_fid: [0x100000000:0x3:0x0] }"""

# uninstantiated extent ends written as numbers rather than EOF
PFL_NUMERIC_EOF = PFL.replace("lcme_extent.e_end:   EOF", "lcme_extent.e_end:   18446744073709551615")


@pytest.mark.parametrize("text, components", [
    (PLAIN, (Component(0, None, 1 * MiB, (1, 0)),)),
    (PLAIN + "\n", (Component(0, None, 1 * MiB, (1, 0)),)),
    (PLAIN_POOL_VERBOSE, (Component(0, None, 4 * MiB, (7, 8, 9)),)),
    (PFL, (Component(0, 1 * MiB, 1 * MiB, (0,)),
           Component(1 * MiB, None, 4 * MiB, ()))),     # uninstantiated: OSTs unknown
    (PFL_NUMERIC_EOF, (Component(0, 1 * MiB, 1 * MiB, (0,)),
                       Component(1 * MiB, None, 4 * MiB, ()))),
    (DOM, (Component(0, 1 * MiB, 1 * MiB, ()),          # DoM: no OSTs
           Component(1 * MiB, None, 1 * MiB, (3, 4)))),
    (FLR, (Component(0, 4 * MiB, 1 * MiB, (0,)),        # mirror 1 only
           Component(4 * MiB, None, 2 * MiB, (1, 2)))),
    (DEFAULT_PLAIN, (Component(0, None, 1 * MiB, (6, 12)),)),
    (DEFAULT_PLAIN_OLD, (Component(0, None, 2 * MiB, (1, 0)),)),
], ids=["plain", "plain-newline", "plain-pool-verbose", "pfl", "pfl-numeric-eof", "dom", "flr", "default-plain",
        "default-plain-old"])
def test_parse_getstripe(text, components):
    layout = parse_getstripe(text)
    assert layout == StripeLayout(components, "lfs")


def test_pfl_stripe_size_is_the_coarsest():
    assert parse_getstripe(PFL).stripe_size == 4 * MiB
    assert parse_getstripe(DOM).stripe_size == 1 * MiB


def test_flr_ignores_second_mirror_osts():
    layout = parse_getstripe(FLR)
    assert 5 not in {o for c in layout.components for o in c.osts}
    assert 8 * MiB not in {c.stripe_size for c in layout.components}


@pytest.mark.parametrize("text", [
    "",
    "\n\n",
    "hello world",
    "error: cannot get stripe: No such file or directory",
    "/mnt/lustre/file has no stripe info",
    "lmm_stripe_count:  2\nlmm_pattern:       raid0",        # no stripe size
    "lmm_stripe_size:   0",
    "components:\n",                                        # composite without any component
    pytest.param("lmm_stripe_count:  2\nlmm_stripe_size:"),
    pytest.param("lmm_stripe_size:   banana"),
])
def test_garbage_is_none(text):
    assert parse_getstripe(text) is None


def test_layout_source_without_lfs_uses_default():
    src = LayoutSource("off", 2 * MiB)
    layout = src.layout("/nonexistent")
    assert layout.source == "default"
    assert layout.stripe_size == 2 * MiB
    assert layout.components == (Component(0, None, 2 * MiB, ()),)


@pytest.mark.parametrize("script, expected_source", [
    ("cat <<'OUT'\n" + PFL + "\nOUT\n", "lfs"),
    ("echo 'lfs: not a lustre file' >&2\nexit 1\n", "default"),  # lfs fails: the default layout
    ("echo garbage\n", "default"),
])
def test_layout_source_with_stand_in_lfs(tmp_path, script, expected_source):
    lfs = tmp_path / "lfs"
    lfs.write_text("#!/bin/sh\n" + script)
    lfs.chmod(0o755)
    layout = LayoutSource(str(lfs), 1 * MiB).layout(str(tmp_path / "f"))
    assert layout.source == expected_source
    if expected_source == "lfs":
        assert layout == parse_getstripe(PFL)
