"""The data repository event log (FSx G-1..G-3): JSON lines with FSx's event codes and levels.

Pure: standard library only. One log per file system, named like FSx's log stream
(`datarepo_<fsid>.jsonl`), appended by auto-export and by export tasks. The level setting
decides which events are written: DISABLED, WARN_ONLY, ERROR_ONLY or WARN_ERROR.
"""
from __future__ import annotations

import json
import os
import threading
import time
from enum import Enum

from .errors import ErrorCode


class LogLevel(str, Enum):
    DISABLED = "DISABLED"
    WARN_ONLY = "WARN_ONLY"
    ERROR_ONLY = "ERROR_ONLY"
    WARN_ERROR = "WARN_ERROR"

    def admits(self, level: str) -> bool:
        return level in {"DISABLED": (), "WARN_ONLY": ("WARN",), "ERROR_ONLY": ("ERROR",),
                         "WARN_ERROR": ("WARN", "ERROR")}[self.value]


# Export event codes (G-2) for the report error codes they stand for.
EXPORT_CODES = {
    ErrorCode.S3_ACCESS_DENIED.value: "S3ExportAccessDenied",
    ErrorCode.PATH_SIZE_TOO_LONG.value: "S3ExportPathSizeTooLong",
    ErrorCode.PATH_NOT_UTF8.value: "S3ExportPathSizeTooLong",
    ErrorCode.FILE_SIZE_TOO_LARGE.value: "S3ExportFileSizeTooLarge",
    ErrorCode.RESOURCE_BUSY.value: "S3ExportResourceBusy",
}
NOT_IN_DRA = "S3ExportLocalObjectNotMatchDra"
INTERNAL_AUTO_EXPORT = "InternalAutoExportError"

# Message templates in FSx's wording (G-3), with their placeholders filled by `export_message`.
_MESSAGES = {
    "S3ExportAccessDenied": "Failed to export file because access was denied to S3 object with key "
                            "{key} in S3 bucket {bucket}.",
    "S3ExportPathSizeTooLong": "Failed to export file because its S3 key {key} is not a valid key "
                               "(longer than 1024 bytes, or not UTF-8).",
    "S3ExportFileSizeTooLarge": "Failed to export file because it is larger than the S3 object size limit; "
                                "key {key} in S3 bucket {bucket}.",
    "S3ExportResourceBusy": "Failed to export file because it was being modified while it was exported; "
                            "key {key} in S3 bucket {bucket}.",
    NOT_IN_DRA: "Export skipped: local file does not belong to a data repository linked file system path.",
}


def export_code(error_code: str, auto: bool) -> str:
    return EXPORT_CODES.get(error_code, INTERNAL_AUTO_EXPORT if auto else "S3ExportInternalError")


def export_message(code: str, key: str, bucket: str, detail: str = "") -> str:
    text = _MESSAGES.get(code, "Failed to export file to key {key} in S3 bucket {bucket}.")
    text = text.format(key=key, bucket=bucket)
    return f"{text} {detail}".strip() if detail else text


def log_path(state_dir: str, file_system_id: str) -> str:
    return os.path.join(state_dir, "logs", f"datarepo_{file_system_id}.jsonl")


class EventLog:
    """Appends events admitted by `level`; thread-safe; each line is flushed at once."""

    def __init__(self, path: str, level: LogLevel, file_system_id: str):
        self.path, self.level, self.file_system_id = path, level, file_system_id
        self._lock = threading.Lock()
        self.counts = {"WARN": 0, "ERROR": 0}

    def event(self, level: str, code: str, message: str, **fields) -> None:
        self.counts[level] = self.counts.get(level, 0) + 1
        if not self.level.admits(level):
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        rec = {"timestamp": stamp,
               "level": level, "eventCode": code, "message": message, "fileSystemId": self.file_system_id}
        rec.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self._lock:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
