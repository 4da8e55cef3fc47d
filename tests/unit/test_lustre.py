"""pfsxport.lustre: parse_getstripe on `lfs getstripe -y` output (plain, PFL and DoM
layouts, the YAML of Lustre 2.12 to 2.15), and LayoutSource's batched
lookups (one `lfs getstripe -y P1 P2 ...` for many files) against a stand-in lfs."""
from __future__ import annotations

import os
import sys

import pytest
from layoututil import comp, composite, sub

from pfsxport.lustre import (
    CHUNK_BYTES,
    CHUNK_PATHS,
    LayoutSource,
    _chunks,
    parse_getstripe,
    split_getstripe,
)
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


# ---- the YAML of lustre 2.10-2.14 (liblustreapi.c lov_dump_comp_v1_entry of those releases): the composite
# header indented two spaces, "  componentN:" then "    lcme_id:", a blank line after every sub-layout ---------

PFL_2_14 = """\
  lcm_layout_gen:    3
  lcm_mirror_count:  1
  lcm_entry_count:   2
  component0:
    lcme_id:             1
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

  component1:
    lcme_id:             2
    lcme_mirror_id:      0
    lcme_flags:          0
    lcme_extent.e_start: 1048576
    lcme_extent.e_end:   EOF
    sub_layout:
      lmm_stripe_count:  4
      lmm_stripe_size:   4194304
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: -1

"""


def test_parse_getstripe_2_14_yaml():
    assert parse_getstripe(PFL_2_14) == parse_getstripe(PFL)


# ---- many files in one `lfs getstripe -y` ------------------------------------------------------------------
#
# The stand-in answers like lfs.c/liblustreapi.c: one section per argument, in argument order, WITHOUT the
# file name in YAML mode; a vanished file is a warning on stderr and nothing on stdout; "PATH has no stripe
# info" on stdout; a hard error is reported on stderr, exits 1 and stops there. Each test file holds the YAML
# (2.15+ spelling) of its own layout; the stand-in re-spells it as 2.10-2.14 did ("old") or prefixes the name
# ("named", as the default non-YAML format does). Directives: !EIO, !NOSTRIPE, !SILENT (prints nothing at all:
# a section that cannot be accounted for), !HANG (flushes, then sleeps). Every call appends its path count to
# the file `calls` next to the stand-in.

STAND_IN = r'''#!{python}
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
assert args[:2] == ["getstripe", "-y"], args
paths = args[2:]
with open(os.path.join(here, "calls"), "a") as f:
    f.write(f"{{len(paths)}}\n")
mode = open(os.path.join(here, "mode")).read().strip()


def old(text):
    out, comp = [], -1
    for line in text.splitlines():
        if line.startswith("lcm_"):
            out.append("  " + line)
        elif line == "components:":
            continue
        elif line.startswith("  - lcme_id:"):
            if comp >= 0:
                out.append("")
            comp += 1
            out += [f"  component{{comp}}:", "    lcme_id:" + line[len("  - lcme_id:"):]]
        else:
            out.append(line)
    return "\n".join(out) + "\n\n"


for p in paths:
    if not os.path.exists(p):
        sys.stderr.write(f"lfs getstripe: warning: cb_getstripe: {{p}} does not exist: "
                         "No such file or directory (2)\n")
        continue
    text = open(p).read()
    if text.startswith("!EIO"):
        sys.stderr.write(f"lfs getstripe: error: cb_getstripe: LL_IOC_LOV_GETSTRIPE failed for {{p}}: "
                         f"Input/output error (5)\nerror: getstripe failed for {{p}}.\n")
        sys.exit(1)
    if text.startswith("!NOSTRIPE"):
        sys.stdout.write(f"{{p}} has no stripe info\n")
        continue
    if text.startswith("!SILENT"):
        continue
    if text.startswith("!HANG"):
        sys.stdout.flush()
        time.sleep(60)
    if mode == "named":
        sys.stdout.write(p + "\n" + text + "\n")
    elif mode == "old":
        sys.stdout.write(old(text))
    else:
        sys.stdout.write(text + "\n")
'''


def stand_in(tmp_path, mode="new"):
    d = tmp_path / "bin"
    d.mkdir()
    lfs = d / "lfs"
    lfs.write_text(STAND_IN.format(python=sys.executable))
    lfs.chmod(0o755)
    (d / "mode").write_text(mode)
    return lfs


def calls(lfs) -> list[int]:
    f = lfs.parent / "calls"
    return [int(n) for n in f.read_text().split()] if f.exists() else []


def fixture(i: int) -> tuple[str, StripeLayout]:
    """The YAML of file i and the layout it means; OST indices are unique to i, so a section given to the
    wrong file cannot go unnoticed."""
    b = 4 * i
    kind = i % 4
    if kind == 0:  # plain
        size = (1 + i % 3) * MiB
        return sub(2, size, (b, b + 1), indent=""), StripeLayout((Component(0, None, size, (b, b + 1)),), "lfs")
    if kind == 1:  # PFL, the last component uninstantiated up to EOF
        text = composite(3, 1, [comp(1, 0, "init", 0, MiB, sub(1, MiB, (b,))),
                                comp(2, 0, "init", MiB, 64 * MiB, sub(2, 4 * MiB, (b + 1, b + 2))),
                                comp(3, 0, "0", 64 * MiB, "EOF", sub(4, 4 * MiB, (), offset=-1))])
        return text, StripeLayout((Component(0, MiB, MiB, (b,)), Component(MiB, 64 * MiB, 4 * MiB, (b + 1, b + 2)),
                                   Component(64 * MiB, None, 4 * MiB, ())), "lfs")
    if kind == 2:  # Data-on-MDT
        text = composite(2, 1, [comp(1, 0, "init", 0, MiB, sub(0, MiB, (), pattern="mdt")),
                                comp(2, 0, "init", MiB, "EOF", sub(2, 2 * MiB, (b + 3, b + 2)))])
        return text, StripeLayout((Component(0, MiB, MiB, ()), Component(MiB, None, 2 * MiB, (b + 3, b + 2))), "lfs")
    text = composite(4, 2, [comp(65537, 1, "init", 0, 4 * MiB, sub(1, MiB, (b,))),  # FLR
                            comp(65538, 1, "init", 4 * MiB, "EOF", sub(2, 2 * MiB, (b + 1, b + 2))),
                            comp(131073, 2, "init,stale", 0, "EOF", sub(1, 8 * MiB, (b + 3,)))])
    return text, StripeLayout((Component(0, 4 * MiB, MiB, (b,)), Component(4 * MiB, None, 2 * MiB, (b + 1, b + 2))),
                              "lfs")


def make_files(tmp_path, n, special=None):
    """n files under tmp_path/fs; special maps an index to a directive (or None: the file is gone)."""
    root = tmp_path / "fs"
    root.mkdir(exist_ok=True)
    paths, expected = [], {}
    for i in range(n):
        p = str(root / f"f{i:05d}")
        text, layout = fixture(i)
        paths.append(p)
        expected[p] = layout
        if special and i in special:
            if special[i] is not None:
                with open(p, "w") as f:
                    f.write(special[i])
            continue
        with open(p, "w") as f:
            f.write(text)
    return paths, expected


def test_fixture_round_trip():
    for i in range(8):
        text, layout = fixture(i)
        assert parse_getstripe(text) == layout, i


@pytest.mark.parametrize("mode", ["new", "old", "named"])
def test_prefetch_1000_files_in_at_most_4_processes(tmp_path, mode):
    lfs = stand_in(tmp_path, mode)
    paths, expected = make_files(tmp_path, 1000)
    src = LayoutSource(str(lfs), 1 * MiB)
    src.prefetch(paths)
    ran = calls(lfs)
    assert len(ran) <= 4 and sum(ran) == 1000
    got = {p: src.layout(p) for p in paths}
    assert calls(lfs) == ran, "layout() after prefetch() must not run lfs again"
    wrong = [p for p in paths if got[p] != expected[p]]
    assert not wrong, f"{len(wrong)} files got another layout, first {wrong[0]}"
    assert {lay.components[0].end is None for lay in got.values()} == {True, False}  # plain and composite


def test_layouts_returns_every_path_once(tmp_path):
    lfs = stand_in(tmp_path)
    paths, expected = make_files(tmp_path, 10)
    got = LayoutSource(str(lfs), 1 * MiB).layouts(paths + paths[:3])
    assert got == expected
    assert calls(lfs) == [10]


def test_gone_and_unstriped_files_in_a_batch(tmp_path):
    lfs = stand_in(tmp_path)
    paths, expected = make_files(tmp_path, 12, {3: None, 7: "!NOSTRIPE"})
    src = LayoutSource(str(lfs), 2 * MiB)
    got = src.layouts(paths)
    assert calls(lfs) == [12]  # sections matched without asking again
    for i, p in enumerate(paths):
        assert got[p] == (src.default if i in (3, 7) else expected[p]), i


def test_hard_error_stops_lfs_the_rest_get_the_default_with_one_warning(tmp_path, caplog):
    lfs = stand_in(tmp_path, "old")
    paths, expected = make_files(tmp_path, 10, {2: None, 6: "!EIO"})
    src = LayoutSource(str(lfs), 2 * MiB)
    with caplog.at_level("WARNING", logger="pfsxport"):
        got = src.layouts(paths)
    assert calls(lfs) == [10]
    for i, p in enumerate(paths):
        assert got[p] == (expected[p] if i < 6 and i != 2 else src.default), i
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "10 files" in warnings[0].getMessage()


def test_unaccountable_output_is_never_guessed(tmp_path):
    # file 5 prints nothing and lfs says nothing about it: the sections cannot be matched by order, so the
    # batch is asked again in halves until they can; no file gets another file's layout
    lfs = stand_in(tmp_path)
    paths, expected = make_files(tmp_path, 16, {5: "!SILENT"})
    src = LayoutSource(str(lfs), 2 * MiB)
    got = src.layouts(paths)
    for i, p in enumerate(paths):
        assert got[p] == (src.default if i == 5 else expected[p]), i
    ran = calls(lfs)
    assert ran[0] == 16 and 1 < len(ran) <= 1 + 2 * 4


def test_timeout_keeps_what_was_answered_before(tmp_path, caplog, monkeypatch):
    from pfsxport import lustre
    monkeypatch.setattr(lustre, "_TIMEOUT_BASE", 1.5)
    monkeypatch.setattr(lustre, "_TIMEOUT_PER_PATH", 0.0)
    lfs = stand_in(tmp_path)
    paths, expected = make_files(tmp_path, 8, {5: "!HANG"})
    src = LayoutSource(str(lfs), 2 * MiB)
    with caplog.at_level("WARNING", logger="pfsxport"):
        got = src.layouts(paths)
    # the last section before the kill may be cut off, so it is not trusted either
    for i, p in enumerate(paths):
        assert got[p] == (expected[p] if i < 4 else src.default), i
    assert [r.levelname for r in caplog.records].count("WARNING") == 1
    assert calls(lfs) == [8]
    src.layouts(paths)  # the defaults are cached too: a hung lfs is not asked again and again
    assert calls(lfs) == [8]


def test_lfs_that_cannot_run_warns_once_per_call(tmp_path, caplog):
    paths = [str(tmp_path / f"f{i}") for i in range(300)]
    src = LayoutSource(str(tmp_path / "no-such-lfs"), 2 * MiB)
    with caplog.at_level("WARNING", logger="pfsxport"):
        got = src.layouts(paths)
    assert set(got) == set(paths) and {lay.source for lay in got.values()} == {"default"}
    assert [r.levelname for r in caplog.records].count("WARNING") == 2  # 300 paths: two processes


def test_cache_is_bounded_lru(tmp_path):
    lfs = stand_in(tmp_path)
    paths, expected = make_files(tmp_path, 20)
    src = LayoutSource(str(lfs), 2 * MiB, cache_size=10)
    src.prefetch(paths)
    assert calls(lfs) == [20]
    assert src.layout(paths[-1]) == expected[paths[-1]]
    assert calls(lfs) == [20]
    assert src.layout(paths[0]) == expected[paths[0]]  # evicted: asked again, alone
    assert calls(lfs) == [20, 1]


def test_auto_finds_lfs_on_path_and_dash_names_are_not_options(tmp_path, monkeypatch):
    lfs = stand_in(tmp_path)
    monkeypatch.setenv("PATH", f"{lfs.parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    text, layout = fixture(1)
    (tmp_path / "-v").write_text(text)
    assert LayoutSource("auto", 2 * MiB).layout("-v") == layout


def test_chunks_stay_under_the_limits():
    paths = [f"/mnt/fs/{'d' * (i % 900)}/{i}" for i in range(3000)]
    chunks = _chunks(paths)
    assert [p for c in chunks for p in c] == paths
    for c in chunks:
        assert len(c) <= CHUNK_PATHS and sum(len(p.encode()) + 1 for p in c) <= CHUNK_BYTES
    assert len(_chunks([f"/f{i}" for i in range(1000)])) == 4


@pytest.mark.parametrize("mode", ["new", "old"])
def test_split_getstripe_plain_after_plain_and_composite(mode, tmp_path):
    # the sections of a plain file without objects (DoM-only, released) and of the next file must not merge
    texts = [sub(0, MiB, (), pattern="mdt", indent=""), fixture(0)[0], fixture(1)[0], fixture(4)[0]]
    if mode == "old":
        texts = [t.replace("lcm_", "  lcm_") + "\n" for t in texts]  # enough for the header rule
    out = "\n".join(texts) + "\n"
    got = split_getstripe(out, ["/a", "/b", "/c", "/d"])
    assert got["/a"] == StripeLayout((Component(0, None, MiB, ()),), "lfs")
    assert got["/b"] == fixture(0)[1]
    assert got["/d"] == fixture(4)[1]
    assert split_getstripe(out, ["/a", "/b", "/c"]) is None  # one section too many: no guessing
