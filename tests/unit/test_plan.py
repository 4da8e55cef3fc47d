"""pfsxport.plan (part sizes within S3 limits, stripe-aligned) and StripeLayout.osts_for (pfsxport.model)."""
from __future__ import annotations

import pytest

from pfsxport.model import Component, StripeLayout, default_layout
from pfsxport.plan import (
    S3_MAX_PART,
    S3_MAX_PARTS,
    S3_MIN_PART,
    GiB,
    KiB,
    MiB,
    TiB,
    parse_size,
    part_size_for,
    plan_parts,
)

# ---- part_size_for -------------------------------------------------------------------------

@pytest.mark.parametrize("size, stripe, target", [
    (0, 1 * MiB, 16 * MiB),
    (1, 1 * MiB, 16 * MiB),
    (100 * MiB, 1 * MiB, 16 * MiB),
    (100 * MiB, 1 * MiB, 1 * MiB),        # target below S3's minimum
    (100 * MiB, 64 * KiB, 5 * MiB),
    (100 * MiB, 3 * MiB, 16 * MiB),       # stripe that does not divide 16 MiB
    (100 * MiB, 4 * MiB, 5 * MiB),
    (100 * MiB, 7 * MiB, 5 * MiB),        # odd stripe above 5 MiB
    (1 * TiB, 1 * MiB, 16 * MiB),
    (5 * TiB, 1 * MiB, 16 * MiB),         # largest S3 object, small stripes
    (5 * TiB, 64 * KiB, 5 * MiB),
    (5 * TiB, 4 * MiB, 16 * MiB),
    (5 * TiB, 1 * GiB, 16 * MiB),
    (5 * TiB, 4 * GiB, 16 * MiB),         # Lustre's largest stripe
    (5 * TiB - 1, 1 * MiB, 16 * MiB),
    (123456789, 1 * MiB, 16 * MiB),
    (10 * GiB, 1 * MiB, 5 * GiB),         # target at the S3 maximum
])
def test_part_size_for_limits(size, stripe, target):
    p = part_size_for(size, stripe, target)
    assert p % stripe == 0, "part size must be a multiple of the stripe size"
    assert S3_MIN_PART <= p <= S3_MAX_PART
    assert -(-size // p) <= S3_MAX_PARTS
    assert p >= min(max(target, S3_MIN_PART), S3_MAX_PART), "never below the target"


@pytest.mark.parametrize("size, stripe, target, expected", [
    (100 * MiB, 1 * MiB, 16 * MiB, 16 * MiB),
    (100 * MiB, 1 * MiB, 1 * MiB, 5 * MiB),      # raised to S3's minimum
    (100 * MiB, 3 * MiB, 16 * MiB, 18 * MiB),    # rounded up to the stripe
    (100 * MiB, 4 * MiB, 5 * MiB, 8 * MiB),
    (100 * MiB, 64 * KiB, 5 * MiB + 1, 5 * MiB + 64 * KiB),
    (5 * TiB, 1 * MiB, 16 * MiB, 525 * MiB),     # ceil(5 TiB / 10,000) = 524.3 MiB -> 525 MiB
    (10_000 * 16 * MiB, 1 * MiB, 16 * MiB, 16 * MiB),       # exactly 10,000 parts
    (10_000 * 16 * MiB + 1, 1 * MiB, 16 * MiB, 17 * MiB),   # one byte more: bigger parts
])
def test_part_size_for_values(size, stripe, target, expected):
    assert part_size_for(size, stripe, target) == expected


@pytest.mark.parametrize("stripe, target", [
    (0, 16 * MiB),              # unknown stripe: plain S3 limits
    (-1, 16 * MiB),
    (6 * GiB, 16 * MiB),        # stripe larger than a part can be: unaligned but within limits
])
def test_part_size_for_unaligned_fallback(stripe, target):
    for size in (0, 100 * MiB, 5 * TiB):
        p = part_size_for(size, stripe, target)
        assert S3_MIN_PART <= p <= S3_MAX_PART
        assert -(-size // p) <= S3_MAX_PARTS




@pytest.mark.parametrize("size, stripe, target", [
    pytest.param(100 * GiB, 2 * GiB, 5 * GiB),
    pytest.param(100 * GiB, 3 * GiB, 4 * GiB),
    pytest.param(100 * GiB, 4 * GiB, 5 * GiB),
])
def test_part_size_for_stays_aligned_with_large_stripes(size, stripe, target):
    p = part_size_for(size, stripe, target)
    assert p % stripe == 0
    assert S3_MIN_PART <= p <= S3_MAX_PART
    assert -(-size // p) <= S3_MAX_PARTS


# ---- plan_parts ----------------------------------------------------------------------------

def _check_cover(parts, size, psize):
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    pos = 0
    for p in parts:
        assert p.offset == pos, "no gap and no overlap"
        assert p.length > 0
        pos += p.length
    assert pos == size
    # every part but the last has the full part size (and so is >= 5 MiB)
    for p in parts[:-1]:
        assert p.length == psize >= S3_MIN_PART
    if parts:
        assert parts[-1].length <= psize
    assert len(parts) <= S3_MAX_PARTS


P = 16 * MiB


@pytest.mark.parametrize("size, nparts", [
    (0, 0),
    (1, 1),
    (P - 1, 1),
    (P, 1),
    (P + 1, 2),
    (2 * P - 1, 2),
    (2 * P, 2),
    (2 * P + 1, 3),
    (123456789, 8),          # not a multiple of anything: 7 full parts + 6,016,277 bytes
    (10 * P + 12345, 11),
])
def test_plan_parts_cover_exactly(size, nparts):
    layout = default_layout(1 * MiB)
    parts = plan_parts(size, layout, P)
    assert len(parts) == nparts
    _check_cover(parts, size, P)
    for p in parts:
        assert p.offset % (1 * MiB) == 0, "part boundaries align to the stripe"


def test_plan_parts_5tib_with_1mib_stripes():
    size = 5 * TiB
    parts = plan_parts(size, default_layout(1 * MiB), 16 * MiB)
    psize = parts[0].length
    assert len(parts) <= S3_MAX_PARTS
    assert psize % MiB == 0 and psize <= S3_MAX_PART
    _check_cover(parts, size, psize)


def test_plan_parts_last_part_remainder():
    parts = plan_parts(123456789, default_layout(1 * MiB), 16 * MiB)
    assert parts[-1].offset == 7 * 16 * MiB
    assert parts[-1].length == 123456789 - 7 * 16 * MiB


# ---- layouts: OSTs per part ------------------------------------------------------------------

def test_plan_parts_plain_layout_osts():
    # 4 stripes of 1 MiB on OSTs 3,1,2,0; 8 MiB parts touch every OST
    layout = StripeLayout((Component(0, None, 1 * MiB, (3, 1, 2, 0)),), "lfs")
    parts = plan_parts(20 * MiB, layout, 8 * MiB)
    assert [(p.offset, p.length) for p in parts] == [(0, 8 * MiB), (8 * MiB, 8 * MiB), (16 * MiB, 4 * MiB)]
    assert [p.osts for p in parts] == [(3, 1, 2, 0)] * 3


def test_plan_parts_wide_stripes_osts():
    # 8 MiB stripes over 4 OSTs; 8 MiB parts: each part lives on exactly one OST, round robin
    layout = StripeLayout((Component(0, None, 8 * MiB, (10, 11, 12, 13)),), "lfs")
    parts = plan_parts(40 * MiB, layout, 5 * MiB)
    assert [p.length for p in parts] == [8 * MiB] * 5
    assert [p.osts for p in parts] == [(10,), (11,), (12,), (13,), (10,)]


def test_plan_parts_pfl_with_dom_first_component():
    # DoM for the first MiB (no OSTs), then 4 MiB stripes on OSTs 5,6 to EOF
    layout = StripeLayout((Component(0, 1 * MiB, 1 * MiB, ()),
                           Component(1 * MiB, None, 4 * MiB, (5, 6))), "lfs")
    assert layout.stripe_size == 4 * MiB
    size = 30 * MiB + 7
    parts = plan_parts(size, layout, 5 * MiB)
    psize = parts[0].length
    assert psize % (4 * MiB) == 0
    _check_cover(parts, size, psize)
    for p in parts:
        assert set(p.osts) <= {5, 6}
    assert all(p.osts for p in parts), "every part reaches into the striped component"


def _pfl(*cases):
    """Lustre numbers every component's stripes by absolute file offset
    (lov_stripe_number: (offset % (stripe_size * count)) / stripe_size)."""
    return [c[:3] for c in cases]


# DoM [0, 1 MiB) then [1 MiB, EOF) with 4 MiB stripes on OSTs 5,6 (stripe width 8 MiB).
# Lustre: stripe 0 (OST 5) holds [0, 4 MiB) of the file offsets it covers, stripe 1 (OST 6) [4, 8) MiB, ...
@pytest.mark.parametrize("offset, length, expected", _pfl(
    (0, 1 * MiB, ()),                  # only the DoM component: no OST
    (0, 512 * KiB, ()),
    (0, 1 * MiB + 1, (5,)),            # one byte into the EOF component
    (1 * MiB, 3 * MiB, (5,)),
    (1 * MiB, 100 * MiB, (5, 6)),
    (1 * MiB, 4 * MiB, (5, 6), "bug"),  # [1, 5) MiB crosses the 4 MiB stripe boundary
    (8 * MiB, 4 * MiB, (5,), "bug"),
    (9 * MiB, 4 * MiB, (5, 6), "bug"),
))
def test_osts_for_dom_plus_eof(offset, length, expected):
    layout = StripeLayout((Component(0, 1 * MiB, 1 * MiB, ()),
                           Component(1 * MiB, None, 4 * MiB, (5, 6))), "lfs")
    assert layout.osts_for(offset, length) == expected


# comp 2 = [1 MiB, EOF), 1 MiB stripes over OSTs 4,5,6,7: file offset 1 MiB is stripe
# (1 MiB % 4 MiB) / 1 MiB = 1 -> OST 5, offset 4 MiB is stripe 0 -> OST 4.
@pytest.mark.parametrize("offset, length, expected", _pfl(
    (0, 1 * MiB, (0,)),
    (1 * MiB, 1 * MiB, (5,), "bug"),
    (3 * MiB, 2 * MiB, (7, 4), "bug"),
    (4 * MiB, 1 * MiB, (4,), "bug"),
    (1 * MiB, 4 * MiB, (5, 6, 7, 4), "bug"),
))
def test_osts_for_pfl_uses_file_offsets(offset, length, expected):
    layout = StripeLayout((Component(0, 1 * MiB, 1 * MiB, (0,)),
                           Component(1 * MiB, None, 1 * MiB, (4, 5, 6, 7))), "lfs")
    assert layout.osts_for(offset, length) == expected


@pytest.mark.parametrize("offset, length, expected", [
    (0, 1, (0,)),
    (0, 1 * MiB, (0,)),
    (0, 1 * MiB + 1, (0, 1)),
    (1 * MiB, 1 * MiB, (1,)),
    (3 * MiB, 2 * MiB, (3, 0)),       # wraps round; first-touched order
    (0, 100 * MiB, (0, 1, 2, 3)),
    (2 * MiB - 1, 2, (1, 2)),
])
def test_osts_for_plain(offset, length, expected):
    layout = StripeLayout((Component(0, None, 1 * MiB, (0, 1, 2, 3)),), "lfs")
    assert layout.osts_for(offset, length) == expected


def test_osts_for_unknown_osts_is_empty():
    assert default_layout(1 * MiB).osts_for(0, 100 * MiB) == ()


@pytest.mark.parametrize("offset, length, expected", [
    (0, 8 * MiB, (0,)),
    (6 * MiB, 4 * MiB, (0, 1)),
    (60 * MiB, 8 * MiB, (2, 3)),
    (0, 128 * MiB, (0, 1, 2, 3, 4, 5, 6)),
    (200 * MiB, 1 * MiB, ()),          # beyond the last (finite) component: no layout
])
def test_osts_for_finite_pfl(offset, length, expected):
    # component starts are multiples of their stripe widths, so stripe numbering is unambiguous
    layout = StripeLayout((Component(0, 8 * MiB, 1 * MiB, (0,)),
                           Component(8 * MiB, 64 * MiB, 4 * MiB, (1, 2)),
                           Component(64 * MiB, 128 * MiB, 4 * MiB, (3, 4, 5, 6))), "lfs")
    assert layout.osts_for(offset, length) == expected


def test_stripe_size_is_coarsest_component():
    layout = StripeLayout((Component(0, 1 * MiB, 1 * MiB, ()), Component(1 * MiB, None, 4 * MiB, (1,))), "lfs")
    assert layout.stripe_size == 4 * MiB


# ---- parse_size ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("16MiB", 16 * MiB),
    ("64M", 64 * MiB),
    ("64MB", 64 * MiB),
    ("64mib", 64 * MiB),
    ("1G", GiB),
    ("1GiB", GiB),
    ("5GiB", 5 * GiB),
    ("1T", TiB),
    ("5TiB", 5 * TiB),
    ("64KiB", 64 * KiB),
    ("64k", 64 * KiB),
    ("4096", 4096),
    ("4096B", 4096),
    ("0", 0),
    (" 16 MiB ", 16 * MiB),
    ("1.5GiB", 3 * GiB // 2),
    (4096, 4096),
    (0, 0),
    (5 * TiB, 5 * TiB),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected




@pytest.mark.parametrize("text", [
    "", " ", "abc", "MiB", "16XiB", "16 MiBs", "1ib", "16MiB16", "-1", "-5MiB", -1, True, False, None, "nan",
    "0x10", "1,5MiB",
    pytest.param("inf"),
    pytest.param("infMiB"),
    pytest.param("1e400"),
])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)
