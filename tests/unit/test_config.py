"""pfsxport.config: YAML + command line -> ExportConfig; every error names the key and where it came from
(SPEC §8: "a config error names the key and the file")."""
from __future__ import annotations

import os
import re

import pytest

from pfsxport.config import MAX_TASK_PATHS, ExportConfig, file_system_id_for, load, load_yaml, resolve
from pfsxport.errors import ConfigError, ExitCode
from pfsxport.plan import GiB, MiB


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "fsroot"
    d.mkdir()
    return str(d)


def write(tmp_path, text: str, name: str = "site.yaml") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# ---- load_yaml -------------------------------------------------------------------------------

def test_load_yaml_flattens_sections(tmp_path):
    p = write(tmp_path, """
fs_root: /lustre
repository: s3://bucket/prefix
paths: [a, b]
s3:
  endpoint_url: http://127.0.0.1:8333
  addressing_style: path
transfer:
  part_size: 32MiB
progress:
  mode: log
""")
    assert load_yaml(p) == {
        "fs_root": "/lustre", "repository": "s3://bucket/prefix", "paths": ["a", "b"],
        "s3.endpoint_url": "http://127.0.0.1:8333", "s3.addressing_style": "path",
        "transfer.part_size": "32MiB", "progress.mode": "log"}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_load_yaml_empty(tmp_path, text):
    assert load_yaml(write(tmp_path, text)) == {}


@pytest.mark.parametrize("text, key", [
    ("fs_rot: /x\n", "fs_rot"),
    ("bucket: b\n", "bucket"),
    ("s3:\n  endpoint: http://x\n", "s3.endpoint"),
    ("transfer:\n  partsize: 16MiB\n", "transfer.partsize"),
    ("progress:\n  interval_s: 3\n", "progress.interval_s"),
    ("fs_root: /x\nrepository: s3://b/p\nextra: 1\n", "extra"),
])
def test_unknown_key_names_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_yaml(p)
    msg = str(ei.value)
    assert f"'{key}'" in msg
    assert p in msg
    assert ei.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize("section, value", [
    ("s3", "path"), ("transfer", "[1, 2]"), ("progress", "3"), ("s3", "null"),
])
def test_section_not_a_mapping(tmp_path, section, value):
    p = write(tmp_path, f"{section}: {value}\n")
    with pytest.raises(ConfigError) as ei:
        load_yaml(p)
    assert f"'{section}'" in str(ei.value) and p in str(ei.value)
    assert "mapping" in str(ei.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_yaml(p)
    assert p in str(ei.value)


@pytest.mark.parametrize("text", [
    "fs_root: [unclosed\n",
    "a: b: c\n",
    "s3:\n  region: x\n region2: y\n",
    "\tfs_root: /x\n",
])
def test_invalid_yaml(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_yaml(p)
    assert p in str(ei.value) and "YAML" in str(ei.value)


def test_nonexistent_file(tmp_path):
    p = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as ei:
        load_yaml(p)
    assert p in str(ei.value) and "does not exist" in str(ei.value)


def test_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_yaml(str(tmp_path))  # a directory
    assert str(tmp_path) in str(ei.value)


# ---- resolve: values ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, raw, fragment", [
    ("transfer.part_size", "3MiB", "size"),          # below S3's 5 MiB minimum part
    ("transfer.part_size", "6GiB", "size"),          # above S3's 5 GiB maximum part
    ("transfer.part_size", "lots", "size"),
    ("transfer.stripe_size", "4KiB", "size"),
    ("s3.addressing_style", "bogus", "auto, path, virtual"),
    ("s3.checksum", "md5", "auto, crc32, none"),
    ("s3.sign_payload", "sometimes", "auto, always, never"),
    ("s3.max_attempts", 0, "integer"),
    ("s3.max_attempts", "many", "integer"),
    ("s3.max_attempts", True, "integer"),
    ("s3.connect_timeout", "soon", "number"),
    ("s3.read_timeout", 0, "number"),
    ("s3.max_object_size", "6TiB", "size"),
    ("transfer.concurrency", 0, "integer"),
    ("transfer.concurrency", 5000, "integer"),
    ("transfer.cancel_grace", -1, "number"),
    ("transfer.cancel_grace", "soon", "number"),
    ("progress.mode", "fancy", "auto, bar, log, off"),
    ("progress.interval", -1, "number"),
    ("file_system_id", "fs-XYZ", "fs-"),
    ("file_system_id", "fs-0123", "fs-"),           # fewer than 8 hex digits
    ("file_system_id", "fs-0123456789ABCDEF0", "fs-"),  # upper-case hex
    ("repository", "", "non-empty"),
    ("paths", 5, "list"),
    ("paths", ["ok", "bad\nname"], "forbidden"),
    ("paths", ["nul\0"], "forbidden"),
    ("paths", ["x\u2028y"], "forbidden"),
    ("paths", [f"p{i}" for i in range(MAX_TASK_PATHS + 1)], str(MAX_TASK_PATHS)),
    ("paths", ["a" * 4097], "4096"),
])
def test_bad_value_names_key_and_file(root, key, raw, fragment):
    file_values = {"fs_root": root, "repository": "s3://bucket/p", key: raw}
    with pytest.raises(ConfigError) as ei:
        resolve(file_values, {}, "/etc/site.yaml")
    msg = str(ei.value)
    assert f"'{key}'" in msg
    assert "/etc/site.yaml" in msg
    assert fragment in msg


def test_bad_value_from_yaml_file_names_key_and_file(tmp_path, root):
    p = write(tmp_path, f"fs_root: {root}\nrepository: s3://bucket/p\ntransfer:\n  part_size: 3MiB\n")
    with pytest.raises(ConfigError) as ei:
        load(p, {})
    assert "'transfer.part_size'" in str(ei.value) and p in str(ei.value)

    p = write(tmp_path, f"fs_root: {root}\nrepository: s3://bucket/p\ns3:\n  addressing_style: bogus\n", "b.yaml")
    with pytest.raises(ConfigError) as ei:
        load(p, {})
    assert "'s3.addressing_style'" in str(ei.value) and p in str(ei.value) and "bogus" in str(ei.value)


def test_bad_command_line_value_names_the_command_line(root):
    with pytest.raises(ConfigError) as ei:
        resolve({"fs_root": root, "repository": "s3://bucket/p"}, {"transfer.part_size": "1KiB"}, "/etc/site.yaml")
    assert "'transfer.part_size'" in str(ei.value) and "command line" in str(ei.value)


@pytest.mark.parametrize("file_values, cli_values, missing, flag", [
    ({}, {}, "fs_root", "--fs-root"),
    ({"repository": "s3://b1b/p"}, {}, "fs_root", "--fs-root"),
    ({"fs_root": "ROOT"}, {}, "repository", "--repository"),
    ({}, {"fs_root": "ROOT", "repository": None}, "repository", "--repository"),
])
def test_missing_required(root, file_values, cli_values, missing, flag):
    fix = lambda d: {k: (root if v == "ROOT" else v) for k, v in d.items()}  # noqa: E731
    with pytest.raises(ConfigError) as ei:
        resolve(fix(file_values), fix(cli_values), None)
    msg = str(ei.value)
    assert f"'{missing}'" in msg and flag in msg and "--config" in msg


def test_fs_root_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for bad in (str(f), str(tmp_path / "missing")):
        with pytest.raises(ConfigError) as ei:
            resolve({"fs_root": bad, "repository": "s3://bucket/p"}, {}, "/etc/site.yaml")
        assert "'fs_root'" in str(ei.value) and "/etc/site.yaml" in str(ei.value)


@pytest.mark.parametrize("url", ["http://bucket/p", "s3://B/p", "bucket/p", "s3://bucket/a//b"])
def test_bad_repository_names_key_and_source(root, url):
    with pytest.raises(ConfigError) as ei:
        resolve({"fs_root": root}, {"repository": url}, "/etc/site.yaml")
    assert "'repository'" in str(ei.value) and "command line" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        resolve({"fs_root": root, "repository": url}, {}, "/etc/site.yaml")
    assert "'repository'" in str(ei.value) and "/etc/site.yaml" in str(ei.value)


# ---- resolve: results --------------------------------------------------------------------------

def test_defaults(root, monkeypatch):
    monkeypatch.setenv("PFSXPORT_STATE_DIR", "/shared/state")
    cfg = resolve({"fs_root": root, "repository": "s3://bucket/prefix"}, {}, None)
    assert isinstance(cfg, ExportConfig)
    assert cfg.fs_root == root
    assert (cfg.repository.bucket, cfg.repository.prefix) == ("bucket", "prefix/")
    assert (cfg.report_path.bucket, cfg.report_path.prefix) == ("bucket", "pfsxport-reports")
    assert cfg.state_dir == "/shared/state"
    assert cfg.paths == []
    assert cfg.transfer.part_size == 16 * MiB
    assert cfg.transfer.multipart_threshold == 64 * MiB
    assert cfg.s3.addressing_style == "auto"
    assert cfg.progress == "auto"
    assert (cfg.full, cfg.delete, cfg.reconcile) == (False, False, False)
    assert cfg.transfer.cancel_grace == 15.0  # under Slurm's default KillWait (30 s) with the abort's 10 s
    assert re.fullmatch(r"fs-[0-9a-f]{17}", cfg.file_system_id)  # FSx FileSystemId shape (T-4)
    assert cfg.file_system_id == file_system_id_for(root)


def test_cli_overrides_file(tmp_path, root):
    other = tmp_path / "other"
    other.mkdir()
    p = write(tmp_path, f"""
fs_root: {root}
repository: s3://bucket/from-file
transfer:
  part_size: 8MiB
  concurrency: 4
s3:
  addressing_style: virtual
""")
    cli = {"fs_root": str(other), "transfer.part_size": "32MiB", "s3.addressing_style": "path",
           "repository": None, "transfer.concurrency": None}  # None: not given, the file's value stays
    cfg = load(p, cli)
    assert cfg.fs_root == str(other)
    assert cfg.transfer.part_size == 32 * MiB
    assert cfg.s3.addressing_style == "path"
    assert cfg.repository.prefix == "from-file/"
    assert cfg.transfer.concurrency == 4


def test_full_file(tmp_path, root):
    p = write(tmp_path, f"""
fs_root: {root}
repository: s3://bucket/data
report_path: s3://bucket/reports/
state_dir: {tmp_path}/state
file_system_id: fs-0123456789abcdef0
paths: results
s3:
  endpoint_url: http://127.0.0.1:9000
  region: us-east-1
  max_attempts: 3
  connect_timeout: 2.5
  max_object_size: 1TiB
  checksum: none
  sign_payload: never
transfer:
  part_size: 5GiB
  multipart_threshold: 1GiB
  stripe_size: 4MiB
progress:
  mode: "off"
  interval: 30
  status_interval: 1
reconcile: true
""")
    cfg = load(p, {})
    assert cfg.report_path.prefix == "reports"  # report path: no trailing slash
    assert cfg.state_dir == os.path.join(str(tmp_path), "state")
    assert cfg.file_system_id == "fs-0123456789abcdef0"
    assert cfg.paths == ["results"]
    assert cfg.s3.endpoint_url == "http://127.0.0.1:9000"
    assert cfg.s3.max_attempts == 3
    assert cfg.s3.connect_timeout == 2.5
    assert cfg.s3.max_object_size == 1 << 40
    assert cfg.s3.checksum == "none"
    assert cfg.s3.sign_payload == "never"
    assert cfg.transfer.part_size == 5 * GiB
    assert cfg.transfer.multipart_threshold == 5 * GiB  # never below the part size
    assert cfg.transfer.stripe_size == 4 * MiB
    assert cfg.progress == "off"
    assert cfg.progress_interval == 30.0
    assert cfg.status_interval == 1.0
    assert cfg.reconcile is True


def test_file_system_id_is_stable_per_root(tmp_path, root):
    other = tmp_path / "other"
    other.mkdir()
    assert file_system_id_for(root) == file_system_id_for(root + "/")
    assert file_system_id_for(root) != file_system_id_for(str(other))
    link = tmp_path / "link"
    link.symlink_to(root)
    assert file_system_id_for(str(link)) == file_system_id_for(root)  # real path


@pytest.mark.parametrize("key", ["transfer.part_size", "s3.max_object_size", "transfer.multipart_threshold"])
def test_infinite_size_is_a_config_error(root, key):
    with pytest.raises(ConfigError) as ei:
        resolve({"fs_root": root, "repository": "s3://bucket/p", key: "inf"}, {}, "/etc/site.yaml")
    assert f"'{key}'" in str(ei.value) and "/etc/site.yaml" in str(ei.value)


def test_associations_key_is_checked_item_by_item(tmp_path):
    from pfsxport.config import resolve

    ok = resolve({"associations": [{"file_system_path": "/r", "data_repository_path": "s3://b/r/",
                                    "events": "NEW,CHANGED"}]}, {"fs_root": str(tmp_path)}, "site.yaml",
                 need_repository=False)
    assert ok.associations == [("/r", "s3://b/r/", ["NEW", "CHANGED"])]
    with pytest.raises(ConfigError, match=r"key 'associations' in site.yaml: item 0: expected file_system_path"):
        resolve({"associations": [{"file_system_path": "/r", "bucket": "b"}]}, {"fs_root": str(tmp_path)},
                "site.yaml", need_repository=False)


# ---- metrics.listen ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw, host, port", [
    ("127.0.0.1:9817", "127.0.0.1", 9817),
    ("localhost:9817", "localhost", 9817),
    ("[::1]:9817", "::1", 9817),
    ("0.0.0.0:0", "0.0.0.0", 0),  # 0: any free port (the status file names it)
])
def test_metrics_listen(tmp_path, root, raw, host, port):
    p = write(tmp_path, f"fs_root: {root}\nmetrics:\n  listen: '{raw}'\n")
    cfg = load(p, {}, need_repository=False)
    assert (cfg.metrics.host, cfg.metrics.port) == (host, port)
    assert cfg.metrics.listen == raw


def test_metrics_are_off_by_default(root):
    cfg = resolve({"fs_root": root}, {}, None, need_repository=False)
    assert cfg.metrics.listen == "" and cfg.metrics.port is None


@pytest.mark.parametrize("raw", ["9817", "127.0.0.1", "127.0.0.1:", ":9817", "127.0.0.1:http", "127.0.0.1:70000",
                                 "::1:9817", "[::1]9817", "host name:9817", 9817])
def test_bad_metrics_listen_names_key_and_file(root, raw):
    with pytest.raises(ConfigError) as ei:
        resolve({"fs_root": root, "metrics.listen": raw}, {}, "/etc/ae.yaml", need_repository=False)
    msg = str(ei.value)
    assert "'metrics.listen'" in msg and "/etc/ae.yaml" in msg and "HOST:PORT" in msg
