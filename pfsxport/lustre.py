"""Lustre layouts: `lfs getstripe -y` output -> StripeLayout.

Local: no MPI, no S3. Without `lfs` on PATH every file gets the configured default
stripe size. The parser is tolerant: it reads the keys it needs line by line and
ignores the rest, so `-v` output and older spacing parse too.
"""
from __future__ import annotations

import logging
import shutil
import subprocess

from .model import Component, StripeLayout, default_layout

log = logging.getLogger("pfsxport")


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


def _parse_getstripe(text: str) -> StripeLayout | None:
    lines = text.splitlines()
    if not any("lcme_id" in ln for ln in lines):
        comp = _parse_sub(lines, 0, None)
        return StripeLayout((comp,), "lfs") if comp else None
    blocks: list[list[str]] = []
    for ln in lines:
        if ln.strip().startswith("- lcme_id:"):
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


class LayoutSource:
    """Finds each large file's layout; `lfs` is used when configured and present."""

    def __init__(self, setting: str, default_stripe: int):
        self.default = default_layout(default_stripe)
        self.lfs = None
        if setting != "off":
            self.lfs = shutil.which("lfs") if setting == "auto" else setting

    def layout(self, path: str) -> StripeLayout:
        if not self.lfs:
            return self.default
        try:
            out = subprocess.run([self.lfs, "getstripe", "-y", path], capture_output=True, text=True,
                                 timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("lfs getstripe failed for %s: %s; using the default stripe size", path, e)
            return self.default
        parsed = parse_getstripe(out.stdout) if out.returncode == 0 else None
        return parsed or self.default
