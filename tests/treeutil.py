"""Build awkward trees and check a bucket against a tree, header for header and byte for byte.

The expectations are computed here from lstat and the FSx rules as written in the spec,
not with pfsxport's own functions, so a wrong rule in pfsxport cannot agree with itself.
"""
from __future__ import annotations

import os
import stat

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part: tests run with part size = multipart threshold = 5 MiB


def _data(n: int, seed: int) -> bytes:
    block = bytes((seed * 131 + i * 7) % 251 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


def build_hard_tree(root: str, part: int = PART) -> dict[str, str]:
    """The tree of issue 3's acceptance list. Returns {relative path: expected ErrorCode} for
    the entries that must fail."""
    os.makedirs(root, exist_ok=True)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    os.makedirs(j("names"))
    for i, name in enumerate(["with space.txt", "comma,name.txt", 'quote"name.txt', "ünïcødé-文件.dat",
                              "@at.txt", "+plus.txt", "-minus.txt", "=equals.txt", "tab\tname", "'single'"]):
        with open(j("names", name), "wb") as f:
            f.write(_data(100 + i, i))
    os.makedirs(j("empty", "nested-empty"))
    open(j("empty-file"), "wb").close()
    os.makedirs(j("big"))
    for name, size in [("part-minus-1", part - 1), ("part-exact", part), ("part-plus-1", part + 1),
                       ("two-parts-exact", 2 * part), ("several-parts", 3 * part + 777)]:
        with open(j("big", name), "wb") as f:
            f.write(_data(size, size % 97))
    os.makedirs(j("links", "target-dir"))
    with open(j("links", "target-dir", "inside.txt"), "w") as f:
        f.write("inside\n")
    os.symlink("target-dir/inside.txt", j("links", "to-file"))
    os.symlink("does/not/exist", j("links", "dangling"))
    os.symlink("target-dir", j("links", "to-dir"))
    os.symlink("/absolute/elsewhere", j("links", "absolute"))
    os.makedirs(j("modes", "setgid-dir"))
    os.makedirs(j("modes", "sticky-dir"))
    for name, mode in [("setuid", 0o4755), ("setgid", 0o2750), ("both", 0o6711), ("private", 0o600),
                       ("none", 0o000)]:
        with open(j("modes", name), "w") as f:
            f.write(name)
        os.chmod(j("modes", name), mode)
    os.chmod(j("modes", "setgid-dir"), 0o2775)
    os.chmod(j("modes", "sticky-dir"), 0o1777)
    with open(j("modes", "chowned"), "w") as f:
        f.write("owned by someone else\n")
    os.chown(j("modes", "chowned"), 1234, 5678)
    os.mkfifo(j("special.fifo"))
    failures = {}
    deep = root
    parts = []
    for i in range(5):  # 5 levels of 250-byte names: the deepest keys pass 1024 bytes
        parts.append(chr(ord("a") + i) * 250)
        deep = os.path.join(deep, parts[-1])
        os.mkdir(deep)
    with open(os.path.join(deep, "leaf.txt"), "w") as f:
        f.write("too deep for a key\n")
    bad = os.fsencode(root) + b"/bad-\xff\xfe-name.txt"
    with open(bad, "wb") as f:
        f.write(b"name is not utf-8\n")
    failures["bad-\udcff\udcfe-name.txt"] = "PathNotUtf8"
    settle_atimes(root)
    return failures


def settle_atimes(root: str) -> None:
    """Read every symlink and file and list every directory once. Under relatime the first read of a
    fresh entry moves its atime (files are read with O_NOATIME by pfsxport, but readlink and
    getdents have no such flag); after that, comparing headers with lstat is exact."""
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    f.read(1)


def posix_headers(st: os.stat_result) -> dict[str, str]:
    return {
        "file-permissions": format(st.st_mode & ~0o6000, "07o"),
        "file-owner": str(st.st_uid),
        "file-group": str(st.st_gid),
        "file-atime": f"{st.st_atime_ns}ns",
        "file-mtime": f"{st.st_mtime_ns}ns",
        "user-agent": "aws-fsx-lustre",
    }


def expected(root: str, prefix: str, rel: str = "") -> tuple[dict, dict]:
    """({key: (kind, body, headers)}, {relpath: error code}) for everything under root/rel."""
    objs: dict = {}
    fails: dict = {}
    base = os.path.join(root, rel) if rel else root
    for name in sorted(os.listdir(base)):
        path = f"{rel}/{name}" if rel else name
        full = os.path.join(root, path)
        st = os.lstat(full)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        key = prefix + path + ("/" if stat.S_ISDIR(st.st_mode) else "")
        try:
            too_long = len(key.encode("utf-8")) > 1024
            code = "PathSizeTooLong" if too_long else None
        except UnicodeEncodeError:
            code = "PathNotUtf8"
        if code:
            fails[path] = code
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                objs[key] = ("file", f.read(), posix_headers(st))
        elif stat.S_ISLNK(st.st_mode):
            objs[key] = ("symlink", os.fsencode(os.readlink(full)), posix_headers(st))
        else:
            objs[key] = ("directory", b"", posix_headers(st))
        if stat.S_ISDIR(st.st_mode):
            o, f2 = expected(root, prefix, path)
            objs.update(o)
            fails.update(f2)
    return objs, fails


def assert_bucket_matches_tree(client, bucket: str, prefix: str, root: str, *, dir_metadata: bool,
                               content_types: bool, extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """Every exported entry is in the bucket with its bytes and FSx headers, and nothing else
    is under the prefix. Returns the expected failures {path: code}."""
    objs, fails = expected(root, prefix)
    listed = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        listed |= {o["Key"] for o in page.get("Contents", [])}
    listed -= extra  # keys the test put there itself (written by others)
    assert listed == set(objs), (f"missing: {sorted(set(objs) - listed)[:10]}, "
                                 f"extra: {sorted(listed - set(objs))[:10]}")
    for key, (kind, body, headers) in objs.items():
        r = client.get_object(Bucket=bucket, Key=key)
        got = r["Body"].read()
        assert got == body, f"{key}: body differs ({len(got)} vs {len(body)} bytes)"
        if kind != "directory" or dir_metadata:
            assert r["Metadata"] == headers, f"{key}: {r['Metadata']} != {headers}"
        if content_types:
            want = "application/x-directory" if kind == "directory" else "application/octet-stream"
            assert r["ContentType"] == want, f"{key}: Content-Type {r['ContentType']}"
    return fails
