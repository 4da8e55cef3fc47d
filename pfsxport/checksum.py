"""Whole-object CRC32 from per-part CRC32s (zlib's crc32_combine, in GF(2)).

Pure: standard library only. Parts of one upload have the same length except the last,
so the operator for a length is computed once and cached: combining is then 32 steps.
"""
from __future__ import annotations

from functools import lru_cache

_POLY = 0xEDB88320


def _times(mat: tuple[int, ...], vec: int) -> int:
    s = 0
    i = 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _square(mat: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_times(mat, mat[n]) for n in range(32))


@lru_cache(maxsize=64)
def _shift_operator(nbytes: int) -> tuple[int, ...]:
    """The matrix that appends `nbytes` zero bytes to a CRC32 register."""
    result = tuple(1 << n for n in range(32))  # identity
    op = _square(_square(_square((_POLY,) + tuple(1 << n for n in range(31)))))  # one zero byte
    while nbytes:
        if nbytes & 1:
            result = tuple(_times(op, result[n]) for n in range(32))
        nbytes >>= 1
        if nbytes:
            op = _square(op)
    return result


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32 of A+B given crc32(A), crc32(B) and len(B)."""
    if len2 == 0:
        return crc1
    return _times(_shift_operator(len2), crc1) ^ crc2


def combine_all(parts: list[tuple[int, int]]) -> int:
    """CRC32 of the concatenation of parts given as (crc32, length), in order."""
    crc = 0
    for c, n in parts:
        crc = crc32_combine(crc, c, n)
    return crc


def fmt(crc: int) -> str:
    return f"crc32:{crc:08x}"
