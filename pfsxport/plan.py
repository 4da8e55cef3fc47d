"""Part planning within S3's multipart limits, aligned to Lustre stripes.

Pure: standard library only.
"""
from __future__ import annotations

import math

from .model import Part, StripeLayout

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_PUT = 5 * GiB
S3_MAX_OBJECT = 5 * TiB


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def part_size_for(size: int, stripe_size: int, target: int) -> int:
    """Smallest multiple of the stripe size that is >= target and >= 5 MiB and keeps
    the file within 10,000 parts. Falls back to unaligned sizes only when a stripe
    is larger than S3's largest part."""
    want = max(target, S3_MIN_PART, -(-size // S3_MAX_PARTS))
    if stripe_size <= 0 or stripe_size > S3_MAX_PART:
        return min(want, S3_MAX_PART)
    aligned = _round_up(want, stripe_size)
    if aligned <= S3_MAX_PART:
        return aligned
    largest = (S3_MAX_PART // stripe_size) * stripe_size  # the biggest aligned part S3 takes
    if largest >= max(S3_MIN_PART, -(-size // S3_MAX_PARTS)):
        return largest
    return min(want, S3_MAX_PART)  # cannot align within S3's limits; stay within them


def plan_parts(size: int, layout: StripeLayout, target: int) -> list[Part]:
    """Split a file of `size` bytes into stripe-aligned parts with their OSTs."""
    psize = part_size_for(size, layout.stripe_size, target)
    parts = []
    for n, off in enumerate(range(0, size, psize), start=1):
        length = min(psize, size - off)
        parts.append(Part(n, off, length, layout.osts_for(off, length)))
    return parts


def parse_size(text: str | int) -> int:
    """'16MiB', '64M', '1G', '4096' -> bytes (binary units; a bare number is bytes)."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    s = str(text).strip().replace(" ", "")
    units = {"": 1, "B": 1, "K": KiB, "KB": KiB, "KIB": KiB, "M": MiB, "MB": MiB, "MIB": MiB,
             "G": GiB, "GB": GiB, "GIB": GiB, "T": TiB, "TB": TiB, "TIB": TiB}
    num = s.rstrip("BbKkMmGgTtIi")
    unit = s[len(num):].upper()
    if unit not in units or not num:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 64KiB, 16MiB, 5GiB)")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 64KiB, 16MiB, 5GiB)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a size: {text!r} (must be finite and not negative)")
    return int(value * units[unit])
