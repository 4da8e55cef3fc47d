"""The portable event source of auto-export: inotify watches on every directory of a tree.

Local: owns inotify_simple (the only module that imports it); no MPI, no S3. It turns
kernel events into the same `Change` records as the Lustre changelog source, plus the set
of files being written (modified and not yet closed), which auto-export holds back until
their writer closes them. What inotify cannot see (another client's writes on a shared
file system, a watch limit reached, a queue overflow) the service's periodic rescan
catches; `overflowed` tells it to rescan now.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field

from .changelog import Change, ChangeKind

log = logging.getLogger("pfsxport")


@dataclass
class WatchBatch:
    changes: list[Change] = field(default_factory=list)
    writing: set[str] = field(default_factory=set)  # modified, not yet closed
    overflowed: bool = False
    roots_gone: set[str] = field(default_factory=set)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class TreeWatcher:
    """Watches the trees under `mount` rooted at each of `roots` (paths relative to the
    mount, "" = the mount itself); paths in the changes are relative to the mount."""

    def __init__(self, mount: str):
        from inotify_simple import INotify, flags

        self.mount = mount
        self.flags = flags
        self.mask = (flags.CREATE | flags.CLOSE_WRITE | flags.MODIFY | flags.ATTRIB | flags.DELETE
                     | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF
                     | flags.ONLYDIR | flags.DONT_FOLLOW | flags.EXCL_UNLINK)
        self.inotify = INotify()
        self.paths: dict[int, str] = {}  # watch descriptor -> directory (relative to the mount)
        self.wds: dict[str, int] = {}
        self.roots: set[str] = set()
        self.limit_warned = False
        self._moves: dict[int, tuple[str, bool]] = {}  # cookie -> (old path, is_dir), awaiting its MOVED_TO

    def fileno(self) -> int:
        return self.inotify.fileno()

    def close(self) -> None:
        self.inotify.close()

    def watch_tree(self, rel: str) -> None:
        """Watch `rel` and every directory below it (new directories are added as they appear)."""
        stack = [rel]
        while stack:
            d = stack.pop()
            if not self._add(d):
                continue
            try:
                with os.scandir(os.path.join(self.mount, d)) as it:
                    for de in it:
                        if de.is_dir(follow_symlinks=False):
                            stack.append(_join(d, de.name))
            except OSError:
                continue

    def add_root(self, rel: str) -> None:
        self.roots.add(rel)
        self.watch_tree(rel)

    def remove_root(self, rel: str) -> None:
        self.roots.discard(rel)
        self._unwatch(rel)

    def _add(self, rel: str) -> bool:
        try:
            wd = self.inotify.add_watch(os.path.join(self.mount, rel), self.mask)
        except OSError as e:
            if e.errno == errno.ENOSPC and not self.limit_warned:
                self.limit_warned = True
                log.warning("inotify watch limit reached (fs.inotify.max_user_watches): changes below %s "
                            "are found by the periodic rescan only", rel or "/")
            return False
        self.paths[wd] = rel
        self.wds[rel] = wd
        return True

    def _unwatch(self, rel: str) -> None:
        for d in [d for d in self.wds if d == rel or d.startswith(rel + "/") or not rel]:
            wd = self.wds.pop(d)
            self.paths.pop(wd, None)
            try:
                self.inotify.rm_watch(wd)
            except OSError:
                pass

    def _moved(self, old: str, new: str) -> None:
        for d in [d for d in self.wds if d == old or d.startswith(old + "/")]:
            wd = self.wds.pop(d)
            nd = new + d[len(old):]
            self.wds[nd] = wd
            self.paths[wd] = nd

    def read(self, timeout_ms: int) -> WatchBatch:
        """Events that arrived within `timeout_ms` (fewer waits when some are ready)."""
        f = self.flags
        out = WatchBatch()
        for ev in self.inotify.read(timeout=timeout_ms, read_delay=5):
            if ev.mask & f.Q_OVERFLOW:
                out.overflowed = True
                continue
            parent = self.paths.get(ev.wd)
            if ev.mask & f.IGNORED:
                if parent is not None:
                    self.paths.pop(ev.wd, None)
                    if self.wds.get(parent) == ev.wd:
                        del self.wds[parent]
                continue
            if parent is None:
                continue
            if ev.mask & (f.DELETE_SELF | f.MOVE_SELF):
                if parent in self.roots:
                    out.roots_gone.add(parent)
                continue
            path = _join(parent, ev.name)
            is_dir = bool(ev.mask & f.ISDIR)
            if ev.mask & f.CREATE:
                out.changes.append(Change(ChangeKind.CREATED, path, is_dir=is_dir))
                if is_dir:
                    self.watch_tree(path)
            elif ev.mask & f.MODIFY:
                out.writing.add(path)
            elif ev.mask & f.CLOSE_WRITE:
                out.writing.discard(path)
                out.changes.append(Change(ChangeKind.CLOSED, path, is_dir=False))
            elif ev.mask & f.ATTRIB:
                out.changes.append(Change(ChangeKind.METADATA, path, is_dir=is_dir))
            elif ev.mask & f.DELETE:
                out.changes.append(Change(ChangeKind.DELETED, path, is_dir=is_dir))
            elif ev.mask & f.MOVED_FROM:
                self._moves[ev.cookie] = (path, is_dir)
            elif ev.mask & f.MOVED_TO:
                old = self._moves.pop(ev.cookie, None)
                if old is None:  # moved in from outside the watched trees: a new entry
                    out.changes.append(Change(ChangeKind.CREATED, path, is_dir=is_dir))
                    if is_dir:
                        self.watch_tree(path)
                else:
                    out.changes.append(Change(ChangeKind.RENAMED, path, old_path=old[0], is_dir=is_dir))
                    if is_dir:
                        self._moved(old[0], path)
        # A MOVED_FROM whose MOVED_TO has not come within this read left the watched trees.
        for old, is_dir in self._moves.values():
            out.changes.append(Change(ChangeKind.DELETED, old, is_dir=is_dir))
            if is_dir:
                self._unwatch(old)
        self._moves.clear()
        return out
