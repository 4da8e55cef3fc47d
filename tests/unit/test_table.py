"""pfsxport.table: `--output table`, a box per object as `aws --output table` draws them."""
from __future__ import annotations

from pfsxport.table import render

TASKS = {"DataRepositoryTasks": [
    {"TaskId": "task-0123456789abcdef0", "Lifecycle": "SUCCEEDED", "CreationTime": 1764814671.5,
     "Paths": ["results", "logs"], "Status": {"TotalCount": 6, "FailedCount": 0},
     "Report": {"Enabled": True, "Path": "s3://b/pfsxport-reports"}},
    {"TaskId": "task-0123456789abcdef1", "Lifecycle": "FAILED", "Paths": [],
     "FailureDetails": {"Message": "bad\nline\x1b[31m"}},
]}


def test_box_with_title_key_value_rows_and_sub_tables():
    out = render("DescribeDataRepositoryTasks", TASKS)
    lines = out.splitlines()
    assert len({len(line) for line in lines}) == 1, out  # one box: every line as wide
    assert lines[0] == "-" * len(lines[0])
    assert lines[1].startswith("|") and lines[1].strip("| ") == "DescribeDataRepositoryTasks"
    assert lines[2].startswith("+-") and lines[2].endswith("-+")
    # each task is a sub-table one level in, titled by its key, its scalars as key/value rows
    titles = [ln.strip("| ") for ln in lines if ln.startswith("||") and not ln.startswith("|||")
              and "|" not in ln.strip("|") and "+" not in ln]
    assert titles == ["DataRepositoryTasks", "DataRepositoryTasks"]
    rows = {tuple(c.strip() for c in ln.strip("|").split("|")) for ln in lines}
    assert ("TaskId", "task-0123456789abcdef0") in rows
    assert ("Lifecycle", "SUCCEEDED") in rows and ("CreationTime", "1764814671.5") in rows
    assert ("Enabled", "True") in rows
    # nested dicts and lists are sub-tables one level further in
    assert any(ln.startswith("|||") and ln.strip("| ") == "Status" for ln in lines)
    assert ("TotalCount", "6") in rows and ("results",) in rows and ("logs",) in rows
    # scalar rows come first, in the document's order
    assert out.index("TaskId") < out.index("Lifecycle") < out.index("CreationTime") < out.index("TotalCount")


def test_control_characters_are_escaped():
    out = render("DescribeDataRepositoryTasks", TASKS)
    assert "\x1b" not in out and "bad\\x0aline\\x1b[31m" in out
    assert len({len(line) for line in out.splitlines()}) == 1


def test_wide_characters_keep_the_box_straight():
    out = render("DescribeDataRepositoryAssociations",
                 {"Associations": [{"AssociationId": "dra-1", "FileSystemPath": "/結果/データ"}]})
    from pfsxport.table import display_width

    assert len({display_width(line) for line in out.splitlines()}) == 1, out


def test_layout_as_aws_draws_it():
    out = render("DescribeDataRepositoryAssociations", {"Associations": [
        {"AssociationId": "dra-1", "Lifecycle": "AVAILABLE", "S3": {"AutoExportPolicy": {"Events": ["NEW"]}}}]})
    assert out == """\
----------------------------------------
|  DescribeDataRepositoryAssociations  |
+--------------------------------------+
||            Associations            ||
|+-----------------+------------------+|
||  AssociationId  |  dra-1           ||
||  Lifecycle      |  AVAILABLE       ||
|+-----------------+------------------+|
|||                S3                |||
||+----------------------------------+||
||||        AutoExportPolicy        ||||
|||+--------------------------------+|||
|||||            Events            |||||
||||+------------------------------+||||
|||||  NEW                         |||||
||||+------------------------------+||||
"""


def test_nothing_to_show_is_the_title_alone():
    out = render("DescribeDataRepositoryTasks", {"DataRepositoryTasks": []})
    lines = out.splitlines()
    assert len(lines) == 3 and lines[1].strip("| ") == "DescribeDataRepositoryTasks"
