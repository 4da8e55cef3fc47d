"""Data repository associations (FSx D-1..D-4, A-1): records, validation and lifecycle.

Pure: standard library only. An association links a file-system path (absolute inside the
file system, leading '/') to an S3 prefix, with an auto-export policy.
"""
from __future__ import annotations

import posixpath
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum

from .errors import ConfigError
from .metadata import parse_s3_url

MAX_ASSOCIATIONS = 8
EVENTS = ("NEW", "CHANGED", "DELETED")


class AssociationLifecycle(str, Enum):
    CREATING = "CREATING"
    AVAILABLE = "AVAILABLE"
    MISCONFIGURED = "MISCONFIGURED"
    UPDATING = "UPDATING"
    DELETING = "DELETING"
    FAILED = "FAILED"


@dataclass
class Association:
    association_id: str
    file_system_id: str
    file_system_path: str
    data_repository_path: str
    events: list[str] = field(default_factory=list)
    lifecycle: AssociationLifecycle = AssociationLifecycle.CREATING
    failure_message: str | None = None
    creation_time: float = field(default_factory=time.time)

    def to_fsx(self) -> dict:
        """The DataRepositoryAssociation shape of the FSx API."""
        d = {
            "AssociationId": self.association_id,
            "ResourceARN": f"arn:pfsxport:fsx:local::association/{self.file_system_id}/{self.association_id}",
            "FileSystemId": self.file_system_id,
            "Lifecycle": self.lifecycle.value,
            "FileSystemPath": self.file_system_path,
            "DataRepositoryPath": self.data_repository_path,
            "BatchImportMetaDataOnCreate": False,
            "S3": {"AutoExportPolicy": {"Events": list(self.events)}},
            "CreationTime": round(self.creation_time, 3),
        }
        if self.failure_message and self.lifecycle in (AssociationLifecycle.MISCONFIGURED,
                                                        AssociationLifecycle.FAILED):
            d["FailureDetails"] = {"Message": self.failure_message[:256]}
        return d

    @classmethod
    def from_fsx(cls, d: dict) -> Association:
        return cls(d["AssociationId"], d["FileSystemId"], d["FileSystemPath"], d["DataRepositoryPath"],
                   list(d.get("S3", {}).get("AutoExportPolicy", {}).get("Events", [])),
                   AssociationLifecycle(d["Lifecycle"]), d.get("FailureDetails", {}).get("Message"),
                   d.get("CreationTime", time.time()))


def new_association_id() -> str:
    return "dra-" + secrets.token_hex(9)[:17]


def normalize_fs_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"FileSystemPath {path!r} must be an absolute path inside the file system "
                          "(a leading '/', e.g. /projects/run1)")
    if len(path) > 4096 or "\0" in path:
        raise ConfigError(f"FileSystemPath {path[:60]!r} is longer than 4096 characters or holds NUL")
    if ".." in path.split("/"):
        raise ConfigError(f"FileSystemPath {path!r} must not contain '..'")
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def normalize_events(events: list[str]) -> list[str]:
    bad = [e for e in events if e not in EVENTS]
    if bad:
        raise ConfigError(f"AutoExportPolicy events must be among {', '.join(EVENTS)}; got {', '.join(bad)}")
    return [e for e in EVENTS if e in events]


def _fs_overlap(a: str, b: str) -> bool:
    return a == b or a == "/" or b == "/" or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _s3_overlap(a: str, b: str) -> bool:
    ua, ub = parse_s3_url(a), parse_s3_url(b)
    return ua.bucket == ub.bucket and (ua.prefix.startswith(ub.prefix) or ub.prefix.startswith(ua.prefix))


def validate_new(existing: list[Association], fs_path: str, repo: str, events: list[str]) -> tuple[str, str, list[str]]:
    """Check a new association against FSx's rules (D-4); returns the normalized fields."""
    fs_path = normalize_fs_path(fs_path)
    url = parse_s3_url(repo, what="DataRepositoryPath")
    repo = str(url)
    events = normalize_events(events)
    live = [a for a in existing if a.lifecycle is not AssociationLifecycle.DELETING]
    if len(live) >= MAX_ASSOCIATIONS:
        raise ConfigError(f"a file system has at most {MAX_ASSOCIATIONS} data repository associations; "
                          f"delete one first")
    if fs_path == "/" and live:
        raise ConfigError("FileSystemPath '/' is allowed only as the file system's sole association")
    for a in live:
        if a.file_system_path == "/":
            raise ConfigError(f"{a.association_id} links '/', which must stay the file system's sole association")
        if _fs_overlap(a.file_system_path, fs_path):
            raise ConfigError(f"FileSystemPath {fs_path} overlaps {a.file_system_path} of {a.association_id}")
        if _s3_overlap(a.data_repository_path, repo):
            raise ConfigError(f"DataRepositoryPath {repo} overlaps {a.data_repository_path} of {a.association_id}")
    return fs_path, repo, events


def declare(existing: list[Association], file_system_id: str,
            declared: list[tuple[str, str, list[str]]]) -> list[Association]:
    """Bring config-declared associations into `existing` (in place): one with the same
    paths gets the declared policy, a new one is validated and added. Returns those added
    or changed (their repositories are checked by whoever uses them)."""
    touched = []
    for fs_path, repo, events in declared:
        fs_path = normalize_fs_path(fs_path)
        repo = str(parse_s3_url(repo, what="DataRepositoryPath"))
        events = normalize_events(events)
        same = [a for a in existing if a.file_system_path == fs_path and a.data_repository_path == repo
                and a.lifecycle is not AssociationLifecycle.DELETING]
        if same:
            if same[0].events != events:
                same[0].events = events
                touched.append(same[0])
            continue
        fs_path, repo, events = validate_new(existing, fs_path, repo, events)
        a = Association(new_association_id(), file_system_id, fs_path, repo, events, AssociationLifecycle.AVAILABLE)
        existing.append(a)
        touched.append(a)
    return touched
