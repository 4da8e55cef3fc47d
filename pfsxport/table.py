"""`--output table`: a document (the FSx JSON of `task describe`, `dra describe`) drawn as
boxes, the way `aws --output table` draws them.

Pure (stdlib and pfsxport.metadata only). A title row, then the object's scalars as
key/value rows in the document's order; each nested object, and each list of objects or
values, is a sub-table one level in (one more `|` on each side). Every line is as wide as
the widest content needs. Keys and values are data (paths, messages): control characters
are escaped (`one_line`), so nothing in them can break a line or drive the terminal.
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

from .metadata import one_line

PAD = 2  # spaces before a cell's text (and at least one after it)


def display_width(text: str) -> int:
    """Columns a terminal gives `text`: wide (East Asian) characters take two, combining none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _ljust(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def _center(text: str, width: int) -> str:
    room = max(0, width - display_width(text))
    return " " * (room // 2) + text + " " * (room - room // 2)


def _scalar(value) -> str:
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, bool) or value is None:
        return str(value)
    return one_line(json.dumps(value))


@dataclass
class _Table:
    title: str
    level: int  # bars on each side of its rows: 1 for the outermost table
    pairs: list[tuple[str, str]] = field(default_factory=list)  # key/value rows
    singles: list[str] = field(default_factory=list)  # the values of a list, one a row

    @property
    def key_width(self) -> int:
        return max((display_width(k) for k, _ in self.pairs), default=0) + 2 * PAD

    def needs(self) -> int:
        """The narrowest total width that holds this table."""
        inner = display_width(self.title) + 2 * PAD
        if self.pairs:
            inner = max(inner, self.key_width + 1 + max(display_width(v) for _, v in self.pairs) + PAD + 1)
        if self.singles:
            inner = max(inner, max(display_width(v) for v in self.singles) + PAD + 1)
        return inner + 2 * self.level

    def lines(self, width: int) -> list[str]:
        bars, inner = "|" * self.level, width - 2 * self.level
        edge = "|" * (self.level - 1)

        def rule(split: int | None) -> str:
            cells = "-" * inner if split is None else "-" * split + "+" + "-" * (inner - split - 1)
            return f"{edge}+{cells}+{edge}"
        out = [bars + _center(self.title, inner) + bars]
        if self.pairs:
            kw = self.key_width
            out.append(rule(kw))
            out += [bars + _ljust(" " * PAD + k, kw) + "|" + _ljust(" " * PAD + v, inner - kw - 1) + bars
                    for k, v in self.pairs]
            out.append(rule(kw))
        elif self.singles:
            out.append(rule(None))
            out += [bars + _ljust(" " * PAD + v, inner) + bars for v in self.singles]
            out.append(rule(None))
        else:
            out.append(rule(None))
        return out


def _tables(title: str, value, level: int) -> list[_Table]:
    """The tables of one object (or list), its own first, then its sub-tables in order."""
    t = _Table(one_line(title), level)
    subs: list[_Table] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict):
                if v:
                    subs += _tables(str(k), v, level + 1)
            elif isinstance(v, list):
                subs += _list(str(k), v, level + 1)
            else:
                t.pairs.append((one_line(str(k)), _scalar(v)))
    elif isinstance(value, list):
        return _list(title, value, level)
    else:
        t.singles.append(_scalar(value))
    return [t, *subs]


def _list(title: str, items: list, level: int) -> list[_Table]:
    """A list of objects: a sub-table per object, each titled by the list's key. A list of
    values: one sub-table with a row per value. An empty list: nothing."""
    if not items:
        return []
    if all(isinstance(i, dict) for i in items):
        return [t for i in items for t in _tables(title, i, level)]
    t = _Table(one_line(title), level)
    t.singles = [_scalar(i) if not isinstance(i, (dict, list)) else one_line(json.dumps(i)) for i in items]
    return [t]


def render(title: str, document: dict) -> str:
    """`document` under the title `title` (e.g. DescribeDataRepositoryTasks), as text
    ending in a newline."""
    tables = _tables(title, document, 1)
    width = max(t.needs() for t in tables)
    lines = ["-" * width]
    for t in tables:
        lines += t.lines(width)
    return "\n".join(lines) + "\n"
