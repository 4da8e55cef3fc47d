"""Lustre layouts: `lfs getstripe -y` output -> StripeLayout.

Local: no MPI, no S3. Without `lfs` on PATH every file gets the configured default
stripe size. The parser is tolerant: it reads the keys it needs line by line and
ignores the rest, so `-v` output and older spacing parse too.

Layouts are looked up in batches: one `lfs getstripe -y P1 P2 ...` process answers for
up to 256 files (and at most 100 KB of arguments), and a bounded per-instance LRU cache
lets `prefetch(paths)` followed by `layout(path)` for each path run lfs only once.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .model import Component, StripeLayout, default_layout

log = logging.getLogger("pfsxport")

CHUNK_PATHS = 256  # paths per lfs process
CHUNK_BYTES = 100 * 1024  # bytes of path arguments per lfs process: far below ARG_MAX (2 MiB, or 128 KiB per arg)
CACHE_SIZE = 4096  # layouts kept per LayoutSource (LRU)
_TIMEOUT_BASE = 60.0  # seconds per lfs process, plus _TIMEOUT_PER_PATH for each path it is asked about
_TIMEOUT_PER_PATH = 0.5
_MAX_SPLITS = 12  # bisection depth when a batch's sections cannot be matched to its paths


def _value(line: str) -> str:
    return line.split(":", 1)[1].strip()


def _int(text: str) -> int:
    return int(text, 0)


def _parse_sub(lines: list[str], start: int, end: int | None) -> Component | None:
    size = None
    osts: list[int] = []
    dom = False
    for line in lines:
        s = line.strip().lstrip("- ").strip()
        if s.startswith("lmm_stripe_size:"):
            size = _int(_value(s))
        elif s.startswith("lmm_pattern:"):
            dom = "mdt" in _value(s).split(",")
        elif s.startswith("l_ost_idx:"):
            osts.append(_int(_value(s).rstrip(",")))
        elif "l_ost_idx:" in s:  # default format: "0: { l_ost_idx: 0, l_fid: [...] }"
            osts.append(_int(s.split("l_ost_idx:", 1)[1].split(",", 1)[0].strip()))
    if size is None or size <= 0:
        return None
    if dom:  # Data-on-MDT: the component lives on the MDT, no OSTs
        osts = []
    return Component(start, end, size, tuple(osts))


def parse_getstripe(text: str) -> StripeLayout | None:
    """Parse one file's `lfs getstripe -y` (plain or composite/PFL/FLR) output; None when
    the text is not a layout (cut off, garbled), so the caller falls back to the default."""
    try:
        return _parse_getstripe(text)
    except (ValueError, IndexError):
        return None


def _is_component_start(line: str) -> bool:
    """A component's first line: "  - lcme_id:" (YAML since 2.15, and -v), or "    lcme_id:"
    (YAML of 2.10-2.14, under a "  componentN:" line, and the default format)."""
    s = line.strip()
    if s.startswith("- "):
        s = s[2:].lstrip()
    return s.startswith("lcme_id:")


def _parse_getstripe(text: str) -> StripeLayout | None:
    lines = text.splitlines()
    if not any("lcme_id" in ln for ln in lines):
        comp = _parse_sub(lines, 0, None)
        return StripeLayout((comp,), "lfs") if comp else None
    blocks: list[list[str]] = []
    for ln in lines:
        if _is_component_start(ln):
            blocks.append([ln])
        elif blocks:
            blocks[-1].append(ln)
    comps: list[Component] = []
    first_mirror = None
    for b in blocks:
        fields = {}
        for ln in b:
            s = ln.strip().lstrip("- ").strip()
            if s.startswith("lcme_"):
                k, _, v = s.partition(":")
                fields[k.strip()] = v.strip()
        mirror = fields.get("lcme_mirror_id", "0")
        if first_mirror is None:
            first_mirror = mirror
        if mirror != first_mirror:  # FLR: the first mirror's extents describe the file
            continue
        start = _int(fields.get("lcme_extent.e_start", "0"))
        e_end = fields.get("lcme_extent.e_end", "EOF")
        end = None if e_end in ("EOF", "-1", "0xffffffffffffffff", "18446744073709551615") else _int(e_end)
        comp = _parse_sub(b, start, end)
        if comp:
            comps.append(comp)
    return StripeLayout(tuple(comps), "lfs") if comps else None


# ---- many files in one `lfs getstripe -y` --------------------------------------------------
#
# The format this relies on (lustre/utils/lfs.c lfs_getstripe_internal and liblustreapi.c
# cb_getstripe / lov_dump_user_lmm_header / lov_dump_comp_v1_header, read in lustre-release
# 2.14-era and 2.16/master-era sources):
#   * lfs runs llapi_getstripe() on each argument in argument order and writes each file's
#     layout to stdout as it goes. In YAML mode the file name is NOT printed (every path line
#     is guarded by `!yaml`), so the sections are simply concatenated:
#       - since ~2.15: no blank lines at all; a plain layout starts with "lmm_stripe_count:" at
#         column 0 (with -v: "lmm_magic:"), a composite one with "lcm_layout_gen:" at column 0
#         (with -v: "composite_header:"), components as "components:" / "  - lcme_id:";
#       - 2.10-2.14: the composite header is indented two spaces ("  lcm_layout_gen:"), each
#         component is "  componentN:" / "    lcme_id: ...", and a blank line follows every
#         sub-layout and every plain layout.
#     A section therefore ends where the next file's header begins: a header key (lmm_* at
#     column 0; lcm_*/composite_header at indent <= 2) of the other family, or one already
#     seen in the current section.
#   * A file without a layout prints "PATH has no stripe info" on stdout; a vanished file
#     prints "lfs getstripe: warning: cb_getstripe: PATH does not exist ..." on stderr and
#     nothing on stdout; a hard error prints "error: getstripe failed for PATH." on stderr,
#     exits non-zero and, in the releases read, stops at that argument.
#   * Tolerated too: output that names each file on a line of its own before its layout (the
#     default, non-YAML format does; a release could in YAML). Then sections go by name.
# Without names, sections are matched to paths by order after leaving out the paths that
# stderr names; when the count does not match, nothing is guessed: the batch is split in
# halves and asked again (a clean exit) or falls back to the default layout (a failure).

_NO_STRIPE = " has no stripe info"
_LCM_KEYS = frozenset({"composite_header", "lcm_magic", "lcm_size", "lcm_flags", "lcm_layout_gen",
                       "lcm_mirror_count", "lcm_entry_count"})


@dataclass(slots=True)
class _Section:
    path: str | None = None  # named by a path line or a "has no stripe info" line
    family: str | None = None  # "lmm" (plain), "lcm" (composite), "foreign"
    keys: set = field(default_factory=set)
    lines: list = field(default_factory=list)
    no_stripe: bool = False


def _header_key(line: str) -> tuple[str | None, str]:
    s = line.lstrip(" ")
    key, colon, _ = s.partition(":")
    if not colon:
        return None, ""
    indent = len(line) - len(s)
    key = key.strip()
    if indent <= 2 and key in _LCM_KEYS:
        return "lcm", key
    if indent == 0 and key.startswith("lmm_"):
        return "lmm", key
    if indent == 0 and key.startswith(("lfm_", "lhm_")):
        return "foreign", key
    return None, ""


def _split_sections(text: str, names: set[str]) -> list[_Section]:
    """Cut multi-file `lfs getstripe -y` output into per-file sections, in output order."""
    out: list[_Section] = []
    cur: _Section | None = None
    for line in text.splitlines():
        bare = line.rstrip()
        if bare in names:  # the file's name on a line of its own
            cur = _Section(path=bare)
            out.append(cur)
            continue
        if bare.endswith(_NO_STRIPE):
            name = bare[:-len(_NO_STRIPE)].strip().strip("'")
            if cur is not None and cur.path == name and cur.family is None and not cur.lines:
                cur.no_stripe = True
            else:
                out.append(_Section(path=name if name in names else None, no_stripe=True))
            cur = None
            continue
        family, key = _header_key(line)
        if family:
            if cur is None or (cur.family is not None and (family != cur.family or key in cur.keys)):
                cur = _Section()
                out.append(cur)
            cur.family = family
            cur.keys.add(key)
        if cur is not None:
            cur.lines.append(line)
    return out


def _named_in(stderr: str, args: list[str]) -> set[str]:
    """Arguments that lfs's error output mentions (each stands alone: quoted, or between
    spaces, or before ':', ',' or a sentence's final '.')."""
    if not stderr:
        return set()
    return {a for a in args
            if re.search(r"(?<![^\s'\"])" + re.escape(a) + r"(?=['\"\s:,]|\.(?:\s|$)|$)", stderr, re.MULTILINE)}


def _layout_of(sec: _Section) -> StripeLayout | None:
    return None if sec.no_stripe else parse_getstripe("\n".join(sec.lines))


def split_getstripe(stdout: str, args: list[str], stderr: str = "", complete: bool = True,
                    truncated: bool = False) -> dict[str, StripeLayout | None] | None:
    """Match the output of `lfs getstripe -y ARGS...` to its arguments.

    Returns {arg: layout, or None when its section is there but is no layout} for the
    arguments whose section was identified with certainty (an argument without a section is
    left out), or None when the sections cannot be matched to the arguments (then the
    caller must not guess). `complete` is False when lfs exited non-zero or was stopped;
    `truncated` when it was killed (its last section may be cut off, so it is dropped)."""
    names = set(args)
    sections = _split_sections(stdout, names)
    if truncated and sections:
        sections.pop()
    if not sections:
        return {}
    if any(s.path is not None and not s.no_stripe for s in sections):  # each file named: go by name
        return {s.path: _layout_of(s) for s in sections if s.path is not None}
    named = _named_in(stderr, args)
    expected = [a for a in args if a not in named]
    if len(sections) == len(expected) or (truncated and len(sections) < len(expected)):
        pairs = list(zip(expected, sections, strict=False))  # (killed part way, it answered a prefix)
    elif not complete and named:
        # releases that stop at the first hard error: everything before the last argument
        # that stderr names was answered, nothing after it
        last = max(i for i, a in enumerate(args) if a in named)
        before = [a for a in args[:last] if a not in named]
        if len(sections) != len(before):
            return None
        pairs = list(zip(before, sections, strict=True))
    else:
        return None
    for a, s in pairs:
        if s.path is not None and s.path != a:  # a "has no stripe info" line out of place
            return None
    return {a: _layout_of(s) for a, s in pairs}


def _chunks(paths: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for p in paths:
        n = len(os.fsencode(p)) + 1
        if cur and (len(cur) >= CHUNK_PATHS or size + n > CHUNK_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += n
    if cur:
        out.append(cur)
    return out


class LayoutSource:
    """Finds each large file's layout; `lfs` is used when configured and present.

    Thread-safe. Results (the default layout too, when lfs could not say) are kept in an
    LRU cache of `cache_size` paths, so prefetch() a batch of at most that many paths, then
    layout() each of them without another lfs process."""

    def __init__(self, setting: str, default_stripe: int, cache_size: int = CACHE_SIZE):
        self.default = default_layout(default_stripe)
        self.lfs = None
        if setting != "off":
            self.lfs = shutil.which("lfs") if setting == "auto" else setting
        self.cache_size = cache_size
        self._cache: OrderedDict[str, StripeLayout] = OrderedDict()
        self._lock = threading.Lock()

    def layout(self, path: str) -> StripeLayout:
        return self.layouts([path])[path]

    def prefetch(self, paths: list[str]) -> None:
        """Look up every path not cached yet, in as few lfs processes as the chunking allows."""
        self.layouts(paths)

    def layouts(self, paths: list[str]) -> dict[str, StripeLayout]:
        """{path: layout} for every path given; one lfs process per chunk of uncached paths."""
        if not self.lfs:
            return {p: self.default for p in paths}
        out: dict[str, StripeLayout] = {}
        missing: dict[str, None] = {}  # in the order given, once each
        with self._lock:
            for p in paths:
                if p in out or p in missing:
                    continue
                hit = self._cache.get(p)
                if hit is None:
                    missing[p] = None
                    continue
                self._cache.move_to_end(p)
                out[p] = hit
        for chunk in _chunks(list(missing)):
            found = self._lookup(chunk)
            with self._lock:
                for p, lay in found.items():
                    self._cache[p] = lay
                    self._cache.move_to_end(p)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            out.update(found)
        return out

    def _run(self, args: list[str]) -> tuple[str, str, bool, str, bool]:
        """(stdout, stderr, complete, why not complete, killed) of one `lfs getstripe -y ARGS...`.
        Output is decoded like os.fsdecode, so names that are not UTF-8 match their arguments."""
        try:
            res = subprocess.run([self.lfs, "getstripe", "-y", *args], capture_output=True, check=False,
                                 timeout=_TIMEOUT_BASE + _TIMEOUT_PER_PATH * len(args))
        except subprocess.TimeoutExpired as e:  # POSIX: the output so far, as bytes
            return (os.fsdecode(e.stdout or b""), os.fsdecode(e.stderr or b""), False,
                    f"timed out after {e.timeout:g} s", True)
        except OSError as e:
            return "", "", False, str(e), False
        why = "" if res.returncode == 0 else f"exit status {res.returncode}"
        return os.fsdecode(res.stdout), os.fsdecode(res.stderr), res.returncode == 0, why, False

    def _lookup(self, chunk: list[str], depth: int = 0) -> dict[str, StripeLayout]:
        """Layouts of `chunk` (distinct paths) from one lfs process; the default where lfs did
        not answer for certain."""
        args = ["./" + p if p.startswith("-") else p for p in chunk]  # never taken for an option
        stdout, stderr, complete, why, truncated = self._run(args)
        got = split_getstripe(stdout, args, stderr, complete, truncated)
        if got is None and complete and len(chunk) > 1 and depth < _MAX_SPLITS:
            log.info("lfs getstripe: cannot match the output for %d files to them; asking again in halves",
                     len(chunk))
            half = len(chunk) // 2
            return {**self._lookup(chunk[:half], depth + 1), **self._lookup(chunk[half:], depth + 1)}
        got = got or {}
        out = {}
        unknown = 0
        for p, a in zip(chunk, args, strict=True):
            lay = got.get(a)
            if lay is None:
                unknown += 1
            out[p] = lay or self.default
        if not complete:
            said = stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""  # lfs's last word
            log.warning("lfs getstripe failed for a batch of %d files (%s%s); %d of them use the default "
                        "stripe size", len(chunk), why, f": {said}" if said else "", unknown)
        elif unknown:
            log.debug("lfs getstripe: no layout for %d of %d files; using the default stripe size", unknown,
                      len(chunk))
        return out
