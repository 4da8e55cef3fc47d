"""pfsxport.job.task_paths: task Paths relative to the mount (FSX-FACTS E-3, SPEC §2)."""
from __future__ import annotations

import pytest

from pfsxport.errors import ExitCode, InputError
from pfsxport.job import task_paths

ROOT = "/mnt/fsx"


@pytest.mark.parametrize("paths, expected", [
    ([], [""]),                                  # default: the whole file system
    (None, [""]),
    ([""], [""]),
    (["."], [""]),
    (["./"], [""]),
    ([ROOT], [""]),
    ([ROOT + "/"], [""]),
    (["path1"], ["path1"]),                      # E-3 examples
    (["path2/file1"], ["path2/file1"]),
    ([ROOT + "/path1"], ["path1"]),              # absolute inside the root -> relative
    ([ROOT + "/a/b/c"], ["a/b/c"]),
    ([ROOT + "/a/../b"], ["b"]),
    (["./a"], ["a"]),
    (["a/"], ["a"]),
    (["a//b"], ["a/b"]),
    (["a/./b"], ["a/b"]),
    (["a/x/../b"], ["a/b"]),
    (["..foo"], ["..foo"]),                      # a name that merely starts with two dots
    (["a/..b"], ["a/..b"]),
    (["b", "a"], ["a", "b"]),                    # sorted
    (["a", "a"], ["a"]),                         # duplicates dropped
    (["a", ROOT + "/a", "./a/"], ["a"]),
    (["a", "a/b"], ["a"]),                       # nested: the outer path covers it
    (["a/b", "a"], ["a"]),
    (["a/b/c", "a/b", "x"], ["a/b", "x"]),
    (["a", "ab"], ["a", "ab"]),                  # a prefix that is not a parent is kept
    (["a", "a-b", "a/b"], ["a", "a-b"]),
    (["a", ""], [""]),                           # the root covers everything
    (["x/y", "."], [""]),
    (["caf\u00e9", "caf\u00e9/x"], ["caf\u00e9"]),
])
def test_task_paths(paths, expected):
    assert task_paths(ROOT, paths) == expected


def test_root_with_trailing_slash():
    assert task_paths(ROOT + "/", [ROOT + "/a"]) == ["a"]


@pytest.mark.parametrize("path", [
    "..",
    "../x",
    "a/../../x",
    "./../x",
    "/mnt",
    "/mnt/other/x",
    "/mnt/fsx2/x",        # shares a string prefix with the root, but is outside it
    "/etc/passwd",
    ROOT + "/../x",
])
def test_outside_root(path):
    with pytest.raises(InputError) as ei:
        task_paths(ROOT, ["ok", path])
    assert repr(path) in str(ei.value) and ROOT in str(ei.value)
    assert ei.value.exit_code == ExitCode.BAD_INPUT
