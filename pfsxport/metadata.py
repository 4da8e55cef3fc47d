"""FSx object layout rules: S3 URLs, keys, POSIX metadata headers, Content-Type.

Pure: standard library only. Implements SPEC §2 and FSx facts L-1..L-9, E-14.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError, ErrorCode
from .model import Entry, EntryKind

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
MAX_KEY_BYTES = 1024
USER_AGENT = "aws-fsx-lustre"
DIRECTORY_CONTENT_TYPE = "application/x-directory"
OBJECT_CONTENT_TYPE = "application/octet-stream"
SETID_BITS = 0o6000  # setuid and setgid are never exported (L-7)


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    prefix: str  # "" or ends with "/"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return self.prefix + rel


def parse_s3_url(url: str, *, what: str = "repository", directory: bool = True) -> S3Url:
    """Parse s3://bucket[/prefix]; as FSx does (L-1), a prefix gains a trailing '/'."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ConfigError(f"{what} must be an s3://BUCKET/PREFIX URL, got {url!r}")
    rest = url[5:]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        raise ConfigError(f"{what} {url!r}: bucket name {bucket!r} is not a valid S3 bucket name "
                          "(3-63 characters of a-z 0-9 . -, starting and ending with a letter or digit)")
    prefix = prefix.lstrip("/")
    if "//" in prefix:
        raise ConfigError(f"{what} {url!r}: prefix contains an empty path segment")
    if any(seg in (".", "..") for seg in prefix.split("/")):
        raise ConfigError(f"{what} {url!r}: prefix contains a '.' or '..' segment")
    if directory and prefix and not prefix.endswith("/"):
        prefix += "/"
    if not directory:
        prefix = prefix.rstrip("/")
    return S3Url(bucket, prefix)


def permissions(mode: int) -> str:
    """`file-permissions`: type and permission bits, setuid/setgid cleared, 7 octal digits."""
    return format(mode & ~SETID_BITS, "07o")


def fsx_headers(entry: Entry) -> dict[str, str]:
    """The six user-metadata headers FSx writes on every exported object (L-5)."""
    return {
        "file-permissions": permissions(entry.mode),
        "file-owner": str(entry.uid),
        "file-group": str(entry.gid),
        "file-atime": f"{entry.atime_ns}ns",
        "file-mtime": f"{entry.mtime_ns}ns",
        "user-agent": USER_AGENT,
    }


def content_type(kind: EntryKind) -> str:
    return DIRECTORY_CONTENT_TYPE if kind is EntryKind.DIRECTORY else OBJECT_CONTENT_TYPE


def object_key(repo: S3Url, entry: Entry) -> str:
    """key = repository prefix + path (L-1); a directory's key ends in '/' (L-2)."""
    key = repo.key(entry.path)
    return key + "/" if entry.kind is EntryKind.DIRECTORY else key


def key_error(key: str) -> ErrorCode | None:
    """Why this key cannot be written, if it cannot (E-14): not UTF-8, or over 1024 bytes."""
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from os.fsdecode of non-UTF-8 bytes
        return ErrorCode.PATH_NOT_UTF8
    return ErrorCode.PATH_SIZE_TOO_LONG if len(raw) > MAX_KEY_BYTES else None


def printable(path: str) -> str:
    """A path as text for reports: undecodable bytes shown as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """Text for a log or progress line: undecodable bytes and control characters (newlines,
    carriage returns, terminal escapes, Unicode line separators) as \\xNN or \\uNNNN, so a
    file name can neither forge a line nor garble the terminal. Never raises."""
    try:
        text = printable(text)
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


@dataclass(frozen=True, slots=True)
class PosixHeaders:
    """The POSIX metadata an object's headers carry, as numbers (None where a header is
    absent or unreadable). `mtime_unit` is the resolution of `mtime_ns`: 1 for a value
    in ns, 1,000,000 for one in milliseconds."""

    mode: int | None
    uid: int | None
    gid: int | None
    mtime_ns: int | None
    mtime_unit: int = 1


def read_posix_headers(meta: dict[str, str]) -> PosixHeaders | None:
    """The file-* user metadata of an object (x-amz-meta- removed), read as FSx reads it
    (I-3, facts §9): the mode as octal whatever its padding, a time ending in `ns` as
    nanoseconds and any other as milliseconds. None when the object has none of them."""
    if not any(k in meta for k in ("file-permissions", "file-owner", "file-group", "file-mtime")):
        return None

    def number(name: str, base: int = 10) -> int | None:
        try:
            return int(meta[name].strip(), base)
        except (KeyError, ValueError):
            return None

    mtime, unit = meta.get("file-mtime", "").strip(), 1
    if mtime.endswith("ns"):
        mtime = mtime[:-2]
    else:
        unit = 1_000_000
    try:
        mtime_ns: int | None = int(mtime) * unit
    except ValueError:
        mtime_ns = None
    return PosixHeaders(number("file-permissions", 8), number("file-owner"), number("file-group"), mtime_ns, unit)
