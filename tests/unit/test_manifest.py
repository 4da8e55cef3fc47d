"""The export manifest: delta logs merged into SQLite, lookups per directory, subtrees for
--delete, the journal of open multipart uploads, and logs cut off by a kill."""
from __future__ import annotations

import os

import pytest

from pfsxport.manifest import Manifest

REC = (10, 1, 2, 0o100644, 0, 0, 7)
DIR = (4096, 1, 2, 0o40755, 0, 0, 8)


@pytest.fixture
def manifest(tmp_path):
    return Manifest(str(tmp_path / "m"))


def test_merged_puts_are_found_per_directory_by_byte_name(manifest):
    log = manifest.delta_log("task-a", 0)
    for path, rec in [("a", DIR), ("a/f", REC), ("a/b", DIR), ("a/b/g", REC), ("top", REC),
                      ("bad-\udcff", REC)]:
        log.put(path, rec)
    log.close()
    assert manifest.merge() == []
    r = manifest.reader()
    assert r.directory("a") == {b"f": REC, b"b": DIR}
    assert r.directory("") == {b"a": DIR, b"top": REC, b"bad-\xff": REC}  # not UTF-8: bytes kept
    assert r.directory("nowhere") == {}
    assert not os.listdir(manifest.deltas)  # merged logs are gone


def test_subtree_pages_through_everything_below_and_nothing_beside(manifest):
    log = manifest.delta_log("t", 0)
    for path in ["d", "d/x", "d/s", "d/s/y", "d/s/z", "d0", "d0/w", "d.b", "d-c", "dd"]:
        log.put(path, DIR if path in ("d", "d/s", "d0") else REC)
    log.close()
    manifest.merge()
    got = [p for page in manifest.reader().subtree("d", batch=2) for p, _, _ in page]
    assert sorted(got) == ["d", "d/s", "d/s/y", "d/s/z", "d/x"]
    assert len(got) == len(set(got))


def test_delete_and_tree_records_forget_entries(manifest):
    log = manifest.delta_log("t1", 0)
    for path in ["d", "d/x", "d/s", "d/s/y", "e"]:
        log.put(path, REC)
    log.close()
    manifest.merge()
    log = manifest.delta_log("t2", 1)
    log.add("T", "d")
    log.add("D", "e")
    log.close()
    manifest.merge()
    assert manifest.count() == 0


def test_records_of_one_log_apply_in_order(manifest):
    """Puts go in batches; a delete or tree record between them still lands in its place."""
    newer = (11, 1, 2, 0o100644, 0, 0, 7)
    log = manifest.delta_log("t", 0)
    log.put("d", DIR)
    log.put("d/x", REC)
    log.put("e", REC)
    log.add("T", "d")  # renamed away ...
    log.put("d", DIR)  # ... and made again
    log.put("d/y", REC)
    log.add("D", "e")
    log.put("e", newer)
    log.put("e", REC)
    log.put("e", newer)
    log.close()
    manifest.merge()
    r = manifest.reader()
    assert r.directory("") == {b"d": DIR, b"e": newer}
    assert r.directory("d") == {b"y": REC}


def test_an_intent_without_its_put_leaves_an_entry_that_matches_no_stat(manifest):
    """A rank killed between a PUT and its record: the manifest still learns that the key
    may exist (so a later scan re-sends it, or deletes it once the entry is gone); an intent
    never replaces what was known, and a put always wins over one."""
    log = manifest.delta_log("t1", 0)
    log.put("known", REC)
    log.close()
    manifest.merge()
    log = manifest.delta_log("t2", 0)
    for path, mode in [("sent", REC[3]), ("cut", REC[3]), ("d", DIR[3]), ("known", REC[3])]:
        log.add("I", path, mode)
    log.put("sent", REC)
    log.put("late", REC)
    log.add("I", "late", REC[3])  # an intent after its put, in the same run
    log.add("D", "gone")  # ends the run
    log.close()
    manifest.merge()
    got = manifest.reader().directory("")
    assert got[b"sent"] == REC and got[b"known"] == REC and got[b"late"] == REC
    assert got[b"cut"] == (-1, 0, 0, REC[3], 0, 0, 0)
    assert got[b"d"] == (-1, 0, 0, DIR[3], 0, 0, 0)  # its mode says the key ends in "/"
    assert set(got) == {b"sent", b"known", b"late", b"cut", b"d"}


def test_a_log_cut_off_by_a_kill_loses_only_its_last_line(manifest):
    log = manifest.delta_log("t", 0)
    log.put("a", REC)
    log.put("b", REC)
    log.close()
    path = os.path.join(manifest.deltas, "t", "rank-0", "00.log")
    with open(path, "a") as f:
        f.write('["P","c",10,1')  # killed mid-write
    manifest.merge()
    assert set(manifest.reader().directory("")) == {b"a", b"b"}


def test_open_uploads_survive_until_ended(manifest):
    log = manifest.delta_log("t", 0)
    log.add("U", "up1", "big", "x/big", 100, 1, 2, 7, 5 << 20)
    log.add("p", "up1", 1, "etag1", "b64", 123, 5 << 20)
    log.add("U", "up2", "other", "x/other", 100, 1, 2, 8, 5 << 20)
    log.add("E", "up2")
    log.close()
    (up,) = manifest.merge()
    assert (up.upload_id, up.path, up.key, up.snapshot, up.part_size) == ("up1", "big", "x/big", (100, 1, 2, 7),
                                                                          5 << 20)
    assert up.parts == {1: ("etag1", "b64", 123, 5 << 20)}
    log = manifest.delta_log("t2", 0)
    log.add("E", "up1")
    log.close()
    assert manifest.merge() == []


LINK = (5, 1, 2, 0o120777, 0, 0, 9)


def _exported(manifest, entries):
    log = manifest.delta_log("t", 0)
    for path, rec in entries:
        log.put(path, rec) if len(rec) == 7 else log.add("I", path, rec[0])
    log.close()
    manifest.merge()


def test_reconcile_forgets_the_entries_whose_object_is_missing_or_another_size(manifest):
    _exported(manifest, [("a", DIR), ("a/f", REC), ("a/g", REC), ("a/link", LINK), ("top", REC),
                         ("a/kept-link", LINK), ("cut", (REC[3],)), ("d2", (DIR[3],))])
    listing = [[("p/a/", 0), ("p/a/f", 10), ("p/a/g", 3), ("p/top/", 0)],  # a/g: another size; top: a dir's key
               [("p/a/kept-link", 5), ("p/cut", 99), ("p/foreign", 1), ("p/", 0)]]
    done = manifest.reconcile(iter(listing), "p/")
    assert (done.listed, done.forgotten) == (8, 4)
    r = manifest.reader()
    assert set(r.directory("")) == {b"a", b"cut"}  # an intent whose key is there stays (sent again anyway)
    assert set(r.directory("a")) == {b"f", b"kept-link"}
    # a second listing of the same bucket forgets nothing more
    assert manifest.reconcile(iter(listing), "p/").forgotten == 0


def test_reconcile_of_an_empty_bucket_forgets_everything_and_applies_pending_logs_first(manifest):
    _exported(manifest, [("a", DIR), ("a/f", REC)])
    log = manifest.delta_log("dead-job", 1)  # a job that died: its log is not merged yet
    log.put("b", REC)
    log.close()
    assert manifest.reconcile(iter([]), "").forgotten == 3
    assert manifest.count() == 0


def test_a_lost_bucket_mark_stays_until_a_reconcile_that_began_after_it(manifest):
    assert manifest.lost() is None
    manifest.mark_lost("put_object: NoSuchBucket")
    assert "NoSuchBucket" in manifest.lost()
    assert Manifest(manifest.directory).lost() == manifest.lost()  # on disk: a restart still sees it
    manifest.reconcile(iter([]), "")
    assert manifest.lost() is None

    def listing():  # the bucket is lost again while the listing runs: that mark is kept
        manifest.mark_lost("first")
        yield []
        manifest.mark_lost("again, during the listing")
        yield []
    manifest.reconcile(listing(), "")
    assert "during the listing" in manifest.lost()


# ---- a state directory that cannot be written, or is corrupt -----------------------------------

def test_a_log_on_a_full_file_system_raises_at_flush_and_keeps_raising(manifest):
    """/dev/full answers every write with ENOSPC, as a full file system does."""
    from pfsxport.errors import ExitCode, StateError

    path = os.path.join(manifest.deltas, "t", "rank-0", "00.log")
    os.makedirs(os.path.dirname(path))
    os.symlink("/dev/full", path)
    log = manifest.delta_log("t", 0)
    log.add("I", "a", REC[3])
    with pytest.raises(StateError) as ei:
        log.flush()
    assert ei.value.exit_code == ExitCode.STATE_UNUSABLE == 7
    assert "No space left on device" in str(ei.value) and path in str(ei.value)
    with pytest.raises(StateError):  # an intent added now is not durable either
        log.flush()
    assert "No space left on device" in str(log.close())  # never raises: the task is ending


def test_a_manifest_that_is_not_a_database_is_named_and_the_logs_stay(manifest):
    from pfsxport.errors import StateError

    log = manifest.delta_log("t", 0)
    log.put("a", REC)
    log.close()
    os.makedirs(manifest.directory, exist_ok=True)
    db = manifest.shard_path("00")
    with open(db, "wb") as f:
        f.write(b"not a database, not at all" * 200)
    with pytest.raises(StateError) as ei:
        manifest.merge()
    assert ei.value.name == "StateFileCorrupt"
    assert db in str(ei.value) and "--full" in str(ei.value)
    assert os.listdir(manifest.deltas) == ["t"]  # nothing lost: merged once the manifest is set aside
    os.rename(db, db + ".bad")
    manifest.merge()
    assert manifest.reader().directory("") == {b"a": REC}


def test_overwritten_lines_of_a_log_are_warned_about(manifest, caplog):
    log = manifest.delta_log("t", 0)
    log.put("a", REC)
    log.close()
    path = os.path.join(manifest.deltas, "t", "rank-0", "00.log")
    with open(path, "ab") as f:
        f.write(b"\xff\xfe garbage\n" + b'["P","b",10,1,2,33188,0,0,7]\n')
    manifest.merge()
    assert set(manifest.reader().directory("")) == {b"a", b"b"}
    assert any(path in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


# ---- shards: the merge split over ranks, and the single-file layout of earlier versions --------

def _logs_of_three_ranks(manifest):
    for rank in range(3):
        log = manifest.delta_log("t", rank)
        for i in range(40):
            log.put(f"d{i}/r{rank}", REC)
        log.add("U", f"up{rank}", f"d0/big{rank}", f"d0/big{rank}", 5, 1, 2, 3, 8)
        log.close()
    log = manifest.delta_log("t", 3)
    log.add("T", "d7")  # a tree delete reaches the entries of every shard
    log.close()


def test_the_merge_split_over_two_ranks_gives_the_manifest_one_merge_gives(tmp_path):
    one, two = Manifest(str(tmp_path / "one")), Manifest(str(tmp_path / "two"))
    _logs_of_three_ranks(one)
    _logs_of_three_ranks(two)
    want = one.merge()
    assert two.merge_part(1, 2) == []  # part 1 holds no uploads
    assert os.listdir(two.deltas) == ["t"]  # the logs stay until every part is in
    got = two.merge_part(0, 2)
    two.drop_logs()
    assert sorted(u.upload_id for u in got) == sorted(u.upload_id for u in want) == ["up0", "up1", "up2"]
    assert one.count() == two.count() == 39 * 3
    for i in range(40):
        assert one.reader().directory(f"d{i}") == two.reader().directory(f"d{i}")
    assert two.reader().directory("d7") == {}
    assert not os.listdir(two.deltas)
    shards = [n for n in os.listdir(two.directory) if n.startswith("entries-")]
    assert len(shards) > 10  # the directories spread over the shards


def test_a_merge_cut_off_after_some_shards_is_done_again_to_the_same_manifest(tmp_path):
    one, two = Manifest(str(tmp_path / "one")), Manifest(str(tmp_path / "two"))
    _logs_of_three_ranks(one)
    _logs_of_three_ranks(two)
    one.merge()
    two.merge_part(1, 2)  # then killed: the logs are all still there
    two.merge()
    assert one.count() == two.count()
    assert [u.upload_id for u in one.merge()] == [u.upload_id for u in two.merge()]


def _legacy_manifest(directory):
    import sqlite3

    os.makedirs(os.path.join(directory, "deltas", "old-task"))
    con = sqlite3.connect(os.path.join(directory, "manifest.sqlite"))
    con.executescript("""
        CREATE TABLE entries(dir BLOB NOT NULL, name BLOB NOT NULL, size INTEGER, mtime INTEGER, ctime INTEGER,
          mode INTEGER, uid INTEGER, gid INTEGER, ino INTEGER, PRIMARY KEY(dir, name)) WITHOUT ROWID;
        CREATE TABLE uploads(upload_id TEXT PRIMARY KEY, path BLOB, key TEXT, size INTEGER, mtime INTEGER,
          ctime INTEGER, ino INTEGER, part_size INTEGER);
        CREATE TABLE parts(upload_id TEXT NOT NULL, n INTEGER NOT NULL, etag TEXT, crc_b64 TEXT, crc INTEGER,
          length INTEGER, PRIMARY KEY(upload_id, n)) WITHOUT ROWID;""")
    con.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?)",
                    [(f"d{i}".encode(), b"f", *REC) for i in range(30)] + [(b"", b"top\n", *REC)])
    con.execute("INSERT INTO uploads VALUES ('u1', ?, 'big', 5, 1, 2, 3, 8)", (b"big",))
    con.execute("INSERT INTO parts VALUES ('u1', 1, 'etag', 'b64', 7, 8)")
    con.commit()
    con.close()
    with open(os.path.join(directory, "deltas", "old-task", "rank-1.log"), "w") as f:
        f.write('["P","d0/new",10,1,2,33188,0,0,7]\n["D","d1/f"]\n')


def test_a_manifest_of_the_single_file_layout_is_read_then_split_into_shards(manifest):
    _legacy_manifest(manifest.directory)
    r = manifest.reader()
    assert set(r.directory("d0")) == {b"f"} and set(r.directory("")) == {b"top\n"}
    r.close()
    (up,) = manifest.merge()
    assert (up.upload_id, up.parts) == ("u1", {1: ("etag", "b64", 7, 8)})
    assert not os.path.exists(manifest.legacy_path) and not os.listdir(manifest.deltas)
    assert manifest.count() == 31  # 31 rows, one put more, one delete
    r = manifest.reader()
    assert set(r.directory("d0")) == {b"f", b"new"} and r.directory("d1") == {}
    assert set(r.directory("")) == {b"top\n"}
