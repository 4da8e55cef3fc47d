"""YAML config and command-line options -> one validated ExportConfig.

Owns PyYAML (the only module that imports it). Every error names the key and where it
came from (the file, or the command line). The command line wins over the file.
"""
from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .eventlog import LogLevel
from .metadata import S3Url, parse_s3_url
from .plan import S3_MAX_OBJECT, S3_MAX_PART, S3_MAX_PUT, S3_MIN_PART, MiB, parse_size

MAX_TASK_PATHS = 100
MAX_TASK_PATH_CHARS = 4096
FORBIDDEN_PATH_CHARS = ("\0", "\x85", "\u2028", "\u2029", "\r", "\n")


@dataclass(slots=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_object_size: int = S3_MAX_OBJECT
    checksum: str = "auto"
    sign_payload: str = "auto"  # auto: over http only (TLS protects the body over https)


@dataclass(slots=True)
class TransferSettings:
    part_size: int = 16 * MiB
    multipart_threshold: int = 64 * MiB
    stripe_size: int = 1 * MiB
    concurrency: int = 64
    parts_in_flight: int = 8
    reads_per_ost: int = 8  # part reads in flight per OST, job-wide (0: no cap)
    batch_entries: int = 64
    busy_retries: int = 3
    lfs: str = "auto"
    # after SIGTERM/SIGINT, seconds in-flight entries get to finish before open uploads are aborted
    # (under Slurm's default KillWait of 30 s, with halt.ABORT_WAIT on top)
    cancel_grace: float = 15.0


@dataclass(slots=True)
class AutoExportSettings:
    source: str = "auto"  # auto (changelog when an MDT is given, else inotify), inotify, changelog, poll
    debounce: float = 0.5  # seconds changes gather before a batch goes
    rescan_interval: float = 600.0  # full rescan against the manifest (0 = only at start and on overflow)
    rescan_on_start: bool = True
    recheck_interval: float = 30.0  # how often a MISCONFIGURED repository is probed again
    hold_timeout: float = 60.0  # a file modified but not closed is held until no write was seen for this long
    reload_interval: float = 1.0  # how often association records are re-read
    changelog_mdt: str = ""
    changelog_user: str = ""
    changelog_batch: int = 10000


@dataclass(slots=True)
class MetricsSettings:
    """Prometheus metrics: the auto-export service's on `listen` (HOST:PORT, "" off by default);
    an export task's in a node_exporter textfile at `textfile` ("" off)."""

    listen: str = ""
    textfile: str = ""

    @property
    def host(self) -> str | None:
        return split_listen(self.listen)[0] if self.listen else None

    @property
    def port(self) -> int | None:
        return split_listen(self.listen)[1] if self.listen else None


@dataclass(slots=True)
class ExportConfig:
    fs_root: str
    repository: S3Url | None  # None for auto-export, which takes its repositories from associations
    report_path: S3Url | None
    state_dir: str
    paths: list[str] = field(default_factory=list)
    file_system_id: str = ""
    s3: S3Settings = field(default_factory=S3Settings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    full: bool = False
    delete: bool = False
    reconcile: bool = False  # list each repository prefix once and forget what is missing there
    dry_run: bool = False  # walk, compare and plan; send, delete and record nothing
    task_id: str = ""  # run this PENDING task (task create) instead of creating one
    progress: str = "auto"
    progress_interval: float = 10.0
    status_interval: float = 2.0
    auto_export: AutoExportSettings = field(default_factory=AutoExportSettings)
    event_log_level: LogLevel = LogLevel.WARN_ERROR
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # declared data repository associations: (file_system_path, data_repository_path, events)
    associations: list[tuple[str, str, list[str]]] = field(default_factory=list)


# ---- value parsers: each raises ValueError with a human message --------------------------

def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {v!r}")
        return v
    return parse


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError(f"expected an integer, got {v!r}")
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {v!r}") from None
        if n < lo or (hi is not None and n > hi):
            raise ValueError(f"expected an integer in [{lo}, {hi if hi is not None else 'inf'}], got {n}")
        return n
    return parse


def _float(lo: float) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {v!r}") from None
        if x < lo:
            raise ValueError(f"expected a number >= {lo}, got {x}")
        return x
    return parse


def _size(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        n = parse_size(v)
        if not lo <= n <= hi:
            raise ValueError(f"expected a size in [{lo}, {hi}] bytes, got {v!r}")
        return n
    return parse


def _paths(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise ValueError(f"expected a list of paths, got {v!r}")
    if len(v) > MAX_TASK_PATHS:
        raise ValueError(f"at most {MAX_TASK_PATHS} paths per task, got {len(v)}")
    for p in v:
        if not p:
            raise ValueError("an empty path (give no PATH, or '.', for the whole tree)")
        if len(p) > MAX_TASK_PATH_CHARS:
            raise ValueError(f"a path is longer than {MAX_TASK_PATH_CHARS} characters: {p[:60]!r}...")
        if any(c in p for c in FORBIDDEN_PATH_CHARS):
            raise ValueError(f"path {p!r} contains a forbidden character (NUL, CR, LF, U+0085, U+2028, U+2029)")
    return list(v)


def _associations(v: Any) -> list[tuple[str, str, list[str]]]:
    if not isinstance(v, list):
        raise ValueError("expected a list of {file_system_path, data_repository_path, events}")
    out = []
    for i, a in enumerate(v):
        if not isinstance(a, dict) or not {"file_system_path", "data_repository_path"} <= set(a) \
                or set(a) - {"file_system_path", "data_repository_path", "events"}:
            raise ValueError(f"item {i}: expected file_system_path, data_repository_path and optional events, "
                             f"got {a!r}")
        events = a.get("events", [])
        if isinstance(events, str):
            events = [e for e in events.split(",") if e]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ValueError(f"item {i}: events must be a list of NEW, CHANGED, DELETED")
        out.append((_str(a["file_system_path"]), _str(a["data_repository_path"]), events))
    return out


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"expected true or false, got {v!r}")


def _fsid(v: Any) -> str:
    s = _str(v)
    if not (s.startswith("fs-") and len(s) >= 11 and all(c in "0123456789abcdef" for c in s[3:])):
        raise ValueError(f"expected fs- followed by at least 8 lowercase hex digits, got {v!r}")
    return s


def endpoint_url(v: Any) -> str:
    """An S3 endpoint: http(s)://HOST[:PORT][/], nothing botocore would trip over later."""
    s = _str(v)
    u = urllib.parse.urlsplit(s)
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"expected http(s)://HOST[:PORT], got {s!r} (the port is not a number in 1..65535)") \
            from None
    if u.scheme not in ("http", "https") or not u.hostname or port == 0 or u.query or u.fragment \
            or any(c.isspace() for c in s):
        raise ValueError(f"expected http(s)://HOST[:PORT], got {s!r}")
    return s


def split_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets, [::1]:PORT) -> (host, port); port 0 is any free one."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets
    if not sep or not host or any(c.isspace() or c in "[]/" for c in host) or not port.isdigit() \
            or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9817, [::1]:9817; port 0: any free port), "
                         f"got {text!r}")
    return host, int(port)


def _listen(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected HOST:PORT as a string (e.g. '127.0.0.1:9817'), got {v!r}")
    split_listen(v)
    return v


def _path(v: Any) -> str:
    return os.path.abspath(os.path.expanduser(_str(v)))


# dotted key -> parser; the schema of both the YAML file and the command-line overrides
SCHEMA: dict[str, Callable[[Any], Any]] = {
    "fs_root": _path,
    "repository": _str,
    "report_path": _str,
    "state_dir": _path,
    "paths": _paths,
    "file_system_id": _fsid,
    "full": _bool,
    "delete": _bool,
    "reconcile": _bool,
    "dry_run": _bool,
    "s3.endpoint_url": endpoint_url,
    "s3.region": _str,
    "s3.profile": _str,
    "s3.addressing_style": _choice("auto", "path", "virtual"),
    "s3.max_attempts": _int(1, 100),
    "s3.connect_timeout": _float(0.1),
    "s3.read_timeout": _float(0.1),
    "s3.max_object_size": _size(0, S3_MAX_OBJECT),
    "s3.checksum": _choice("auto", "crc32", "none"),
    "s3.sign_payload": _choice("auto", "always", "never"),
    "transfer.part_size": _size(S3_MIN_PART, S3_MAX_PART),
    "transfer.multipart_threshold": _size(0, S3_MAX_PUT),
    "transfer.stripe_size": _size(64 * 1024, S3_MAX_PART),
    "transfer.concurrency": _int(1, 1024),
    "transfer.parts_in_flight": _int(1, 256),
    "transfer.reads_per_ost": _int(0, 4096),
    "transfer.batch_entries": _int(1, 100_000),
    "transfer.busy_retries": _int(0, 100),
    "transfer.lfs": _str,
    "transfer.cancel_grace": _float(0.0),
    "progress.mode": _choice("auto", "bar", "log", "off"),
    "progress.interval": _float(0.1),
    "progress.status_interval": _float(0.1),
    "auto_export.source": _choice("auto", "inotify", "changelog", "poll"),
    "auto_export.debounce": _float(0.0),
    "auto_export.rescan_interval": _float(0.0),
    "auto_export.rescan_on_start": _bool,
    "auto_export.recheck_interval": _float(0.1),
    "auto_export.hold_timeout": _float(0.0),
    "auto_export.reload_interval": _float(0.1),
    "auto_export.changelog_mdt": _str,
    "auto_export.changelog_user": _str,
    "auto_export.changelog_batch": _int(1, 1_000_000),
    "associations": _associations,
    "event_log.level": lambda v: LogLevel(_choice(*(x.value for x in LogLevel))(v)),
    "metrics.listen": _listen,
    "metrics.textfile": _path,
}
SECTIONS = {"s3", "transfer", "progress", "auto_export", "event_log", "metrics"}


def default_state_dir() -> str:
    return os.environ.get("PFSXPORT_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".pfsxport")


def load_yaml(path: str) -> dict[str, Any]:
    """Read a config file into a flat {dotted key: raw value} dict, checking key names."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
    flat: dict[str, Any] = {}
    for k, v in doc.items():
        if k in SECTIONS:
            if not isinstance(v, dict):
                raise ConfigError(f"key '{k}' in {path}: expected a mapping of {k}.* keys")
            for sk, sv in v.items():
                flat[f"{k}.{sk}"] = sv
        else:
            flat[str(k)] = v
    for k in flat:
        if k not in SCHEMA:
            known = ", ".join(sorted(SCHEMA))
            raise ConfigError(f"unknown key '{k}' in {path} (known keys: {known})")
    return flat


def resolve(file_values: dict[str, Any], cli_values: dict[str, Any], config_path: str | None,
            need_repository: bool = True) -> ExportConfig:
    """Merge (command line wins), validate each value, and build the config. Auto-export
    needs no repository (its associations name theirs)."""
    origin: dict[str, str] = {}
    merged: dict[str, Any] = {}
    for source, raw in ((config_path or "the config", file_values), ("the command line", cli_values)):
        for k, v in raw.items():
            if v is not None:
                merged[k], origin[k] = v, source
    values: dict[str, Any] = {}
    for k, v in merged.items():
        try:
            values[k] = SCHEMA[k](v)
        except ValueError as e:
            raise ConfigError(f"key '{k}' in {origin[k]}: {e}") from None

    def need(k: str) -> Any:
        if k not in values:
            flag = "--" + k.replace("_", "-")
            raise ConfigError(f"missing required key '{k}' (give {flag} or set it in a --config file)")
        return values[k]

    def url(k: str, directory: bool) -> S3Url:
        try:
            return parse_s3_url(values[k], what=k, directory=directory)
        except ConfigError as e:
            raise ConfigError(f"key '{k}' in {origin[k]}: {e}") from None

    if "s3.endpoint_url" not in values:  # botocore would take it from the environment and crash on it
        for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            if os.environ.get(var):
                try:
                    endpoint_url(os.environ[var])
                except ValueError as e:
                    raise ConfigError(f"environment variable {var}: {e}") from None
                break
    fs_root = need("fs_root")
    if not os.path.isdir(fs_root):
        raise ConfigError(f"key 'fs_root' in {origin['fs_root']}: {fs_root} is not a directory")
    if need_repository:
        need("repository")
    repo = url("repository", True) if "repository" in values else None
    report = url("report_path", False) if "report_path" in values else \
        S3Url(repo.bucket, "pfsxport-reports") if repo else None
    s3 = S3Settings(**{k[3:]: v for k, v in values.items() if k.startswith("s3.")})
    transfer = TransferSettings(**{k[9:]: v for k, v in values.items() if k.startswith("transfer.")})
    if transfer.multipart_threshold < transfer.part_size:
        transfer.multipart_threshold = transfer.part_size
    fsid = values.get("file_system_id") or file_system_id_for(fs_root)
    return ExportConfig(
        fs_root=fs_root,
        repository=repo,
        report_path=report,
        state_dir=values.get("state_dir") or default_state_dir(),
        paths=values.get("paths", []),
        file_system_id=fsid,
        s3=s3,
        transfer=transfer,
        full=values.get("full", False),
        delete=values.get("delete", False),
        reconcile=values.get("reconcile", False),
        dry_run=values.get("dry_run", False),
        progress=values.get("progress.mode", "auto"),
        progress_interval=values.get("progress.interval", 10.0),
        status_interval=values.get("progress.status_interval", 2.0),
        auto_export=AutoExportSettings(**{k[12:]: v for k, v in values.items() if k.startswith("auto_export.")}),
        event_log_level=values.get("event_log.level", LogLevel.WARN_ERROR),
        associations=values.get("associations", []),
        metrics=MetricsSettings(values.get("metrics.listen", ""), values.get("metrics.textfile", "")),
    )


def file_system_id_for(fs_root: str) -> str:
    """A stable FSx-shaped id for a file-system root: fs- + 17 hex digits of its real path."""
    digest = hashlib.sha256(os.path.realpath(fs_root).encode("utf-8", "surrogateescape")).hexdigest()
    return "fs-" + digest[:17]


def load(config_path: str | None, cli_values: dict[str, Any], need_repository: bool = True) -> ExportConfig:
    return resolve(load_yaml(config_path) if config_path else {}, cli_values, config_path, need_repository)
