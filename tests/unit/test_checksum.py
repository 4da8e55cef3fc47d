"""pfsxport.checksum: whole-object CRC32 from per-part CRC32s must equal zlib.crc32 of the whole."""
from __future__ import annotations

import random
import zlib

import pytest

from pfsxport.checksum import combine_all, crc32_combine, fmt


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0] + sorted(cuts) + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _parts(chunks: list[bytes]) -> list[tuple[int, int]]:
    return [(zlib.crc32(c), len(c)) for c in chunks]


@pytest.mark.parametrize("seed", range(12))
def test_combine_all_random_splits(seed):
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(0, 5000))
    ncuts = rng.randint(0, 12)
    # cuts may repeat and may sit at 0 or len(data): that makes empty parts
    cuts = [rng.randint(0, len(data)) for _ in range(ncuts)]
    chunks = _split(data, cuts)
    assert b"".join(chunks) == data
    assert combine_all(_parts(chunks)) == zlib.crc32(data)


@pytest.mark.parametrize("chunks", [
    [],
    [b""],
    [b"", b"", b""],
    [b"a"],
    [b"", b"abc"],
    [b"abc", b""],
    [b"ab", b"", b"c"],
    [b"hello ", b"world"],
    [b"\x00" * 1000, b"\xff" * 7],
    [bytes(range(256))] * 4,
])
def test_combine_all_table(chunks):
    assert combine_all(_parts(chunks)) == zlib.crc32(b"".join(chunks))


def test_combine_all_equal_sized_parts_like_multipart():
    rng = random.Random(99)
    data = rng.randbytes(10 * 4096 + 123)
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    assert combine_all(_parts(chunks)) == zlib.crc32(data)


def test_crc32_combine_long_second_part():
    # a 16 MiB part, like a real multipart part: exercises many squarings of the operator
    a = b"prefix-bytes"
    b = bytes(16 << 20)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("crc1", [0, 0xFFFFFFFF, 0x12345678])
def test_crc32_combine_empty_second_part(crc1):
    assert crc32_combine(crc1, zlib.crc32(b""), 0) == crc1


@pytest.mark.parametrize("crc, text", [
    (0, "crc32:00000000"),
    (1, "crc32:00000001"),
    (0xDEADBEEF, "crc32:deadbeef"),
    (0xFFFFFFFF, "crc32:ffffffff"),
    (zlib.crc32(b"hello"), f"crc32:{zlib.crc32(b'hello'):08x}"),
])
def test_fmt(crc, text):
    assert fmt(crc) == text
