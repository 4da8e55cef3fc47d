"""FSx's import rules: which keys become which paths, and what an object's metadata headers mean.

Pure: standard library only. Implements FSx facts I-1..I-5 and §9 (SPEC §7): a key ending in
'/' is a directory; `file-permissions` is parsed as octal whatever its padding, setuid and
setgid are never set, a directory's type comes from its trailing '/', a symlink is recognised
by the type bits 0120000; times are `...ns` nanoseconds or else milliseconds; an object with no
metadata gets FSx's defaults, root:root 0755. Keys with '.', '..' or empty segments (which
is also how an absolute key or one that climbs out of the target looks) are refused with
S3ObjectPathNotPosixCompliant before any file is touched.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .errors import ErrorCode, PfsxError
from .model import EntryKind

DEFAULT_MODE = 0o755  # I-4: an object with no metadata imports as root:root 0755
DEFAULT_OWNER = 0
DEFAULT_GROUP = 0
SETID_BITS = 0o6000  # never set on import (L-7, I-5)
PERMISSION_BITS = 0o7777
NS_PER_MS = 1_000_000


class KeyRefused(PfsxError):
    """A key that cannot become a path under the target; `code` is its report ErrorCode."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class KeyPath:
    """Where a key lands: `path` relative to the target ('/'-joined; "" is the target itself)."""

    path: str
    directory: bool


def key_path(rel_key: str) -> KeyPath:
    """The path of a key relative to the repository prefix, or KeyRefused. Segments are
    checked one by one, never with a substring test: `file..txt` is a fine name."""
    directory = rel_key.endswith("/")
    body = rel_key[:-1] if directory else rel_key
    if body == "" and directory:
        raise KeyRefused(ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT, "the key is absolute (starts with '/')")
    if body == "":
        return KeyPath("", True)  # the repository prefix itself: the target's root
    if "\x00" in body:
        raise KeyRefused(ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT, "the key holds a NUL character")
    if body.startswith("/"):
        raise KeyRefused(ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT,
                         "the key is absolute (starts with '/'): it would land outside the target")
    segments = body.split("/")
    depth = 0
    for seg in segments:
        depth += -1 if seg == ".." else 0 if seg in ("", ".") else 1
        if depth < 0:
            raise KeyRefused(ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT,
                             "the key climbs above the repository prefix ('..'): it would land outside the target")
    for seg in segments:
        if seg in (".", ".."):
            raise KeyRefused(ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT, f"the key has a {seg!r} segment")
        if seg == "":
            raise KeyRefused(ErrorCode.S3_OBJECT_PATH_NOT_POSIX_COMPLIANT,
                             "the key has an empty segment ('//')")
    return KeyPath(body, directory)


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What an object's headers say the entry is. `mode` holds permission bits only (setuid and
    setgid cleared); a time of None is not given (the caller uses the object's LastModified).
    `defaults`: the object had no POSIX metadata at all; `notes`: headers that were ignored."""

    kind: EntryKind
    mode: int
    uid: int
    gid: int
    atime_ns: int | None
    mtime_ns: int | None
    defaults: bool = False
    notes: tuple[str, ...] = ()


def parse_mode(value: str) -> int | None:
    """`file-permissions` as octal whatever its padding (0100644, 100644, 040755, 0755); None
    when it is not an octal number that fits st_mode."""
    text = value.strip()
    if not text or not all(c in "01234567" for c in text):
        return None
    mode = int(text, 8)
    return mode if mode <= 0o177777 else None


def parse_time(value: str) -> int | None:
    """`file-mtime`/`file-atime` in nanoseconds: `<n>ns` is nanoseconds, any other value is
    milliseconds (I-3), fractions of a millisecond kept; None when it is not a time."""
    text = value.strip()
    try:
        if text.endswith("ns"):
            digits = text[:-2]
            if not digits.isdigit():
                return None
            return int(digits)
        ms = Decimal(text)
    except InvalidOperation:
        return None
    if not ms.is_finite() or ms < 0:
        return None
    return int(ms * NS_PER_MS)


def _int_id(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() and int(text) < 2 ** 32 else None


def parse_metadata(directory: bool, metadata: dict[str, str]) -> ObjectMeta:
    """The entry an object's user metadata (names without `x-amz-meta-`, any case) describes.
    A directory is whatever its mode's type bits say (I-2); a key without '/' is a symlink when
    its type bits are 0120000 and a regular file otherwise, except that a directory type there
    raises KeyRefused(S3ObjectTypeMismatch). Headers that cannot be parsed are ignored (their
    defaults used) and named in `notes`."""
    meta = {k.lower(): v for k, v in metadata.items()}
    names = ("file-permissions", "file-owner", "file-group", "file-atime", "file-mtime")
    given = [n for n in names if n in meta]
    notes: list[str] = []
    raw_mode = parse_mode(meta["file-permissions"]) if "file-permissions" in meta else None
    if "file-permissions" in meta and raw_mode is None:
        notes.append(f"file-permissions {meta['file-permissions']!r} is not an octal mode")
    type_bits = stat.S_IFMT(raw_mode) if raw_mode is not None else 0
    if directory:
        kind = EntryKind.DIRECTORY
    elif type_bits == stat.S_IFLNK:
        kind = EntryKind.SYMLINK
    elif type_bits == stat.S_IFDIR:
        raise KeyRefused(ErrorCode.S3_OBJECT_TYPE_MISMATCH,
                         "the object's file-permissions say directory but its key has no trailing '/'")
    else:
        kind = EntryKind.FILE
    mode = DEFAULT_MODE if raw_mode is None else raw_mode & PERMISSION_BITS & ~SETID_BITS
    ids = []
    for name, default in (("file-owner", DEFAULT_OWNER), ("file-group", DEFAULT_GROUP)):
        value = _int_id(meta.get(name))
        if name in meta and value is None:
            notes.append(f"{name} {meta[name]!r} is not a numeric id")
        ids.append(default if value is None else value)
    times = []
    for name in ("file-atime", "file-mtime"):
        value = parse_time(meta[name]) if name in meta else None
        if name in meta and value is None:
            notes.append(f"{name} {meta[name]!r} is not a time")
        times.append(value)
    return ObjectMeta(kind, mode, ids[0], ids[1], times[0], times[1], defaults=not given, notes=tuple(notes))


def owner_applies(euid: int) -> bool:
    """Owner and group are restored only by root: anyone else cannot give a file away, so the
    entries stay owned by the importing user (and its primary group)."""
    return euid == 0
