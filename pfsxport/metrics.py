"""Prometheus metrics. Owns prometheus_client (the only module that imports it; nothing
imports this module unless metrics are on, so export tasks start without it).

`ServiceMetrics` holds the auto-export service's metrics in a registry of its own and serves
it on `metrics.listen` (`/metrics`, prometheus_client's HTTP server in a daemon thread); the
service reports to it through a few calls (`association(...)` for an association's handle,
`forget`, `changelog`). Names follow Prometheus conventions: the `pfsxport_` prefix, base
units, `_total` on counters, `_seconds` and `_bytes`. Every series carries `file_system_id`;
an association's also `association` (its id).

A node_exporter textfile (e.g. for export tasks) is a registry of the same kind written
with `write_textfile`, which writes it atomically (a temporary file renamed into place).
Local: no MPI.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
    write_to_textfile,
)

from .dra import AssociationLifecycle
from .errors import ConfigError
from .metadata import one_line

if TYPE_CHECKING:
    from .autoexport import BatchResult
    from .dra import Association

# Close-to-durable lag: auto-export takes a fraction of a second when idle, minutes in a burst.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def write_textfile(registry: CollectorRegistry, path: str) -> None:
    """`registry` in the text format at `path`, atomically (for node_exporter's textfile collector)."""
    write_to_textfile(path, registry)


class AssociationMetrics:
    """One association's series; `forget()` removes them all (the association was deleted)."""

    def __init__(self, m: ServiceMetrics, assoc: Association):
        self.m = m
        self.labels = (m.file_system_id, assoc.association_id)
        self.children: list[tuple] = []  # (metric, label values) made, for forget()
        self._child(m.info, one_line(assoc.file_system_path), one_line(assoc.data_repository_path)).set(1)
        for metric in (m.received, m.coalesced, m.exported, m.exported_bytes, m.deleted, m.deleted_bytes,
                       m.batches, m.lag):
            self._child(metric)  # shown as 0 from the start, so rate() and alerts see the series
        self.lifecycle(assoc.lifecycle)

    def _child(self, metric, *extra: str):
        values = (*self.labels, *extra)
        if (metric, values) not in self.children:
            self.children.append((metric, values))
        return metric.labels(*values)

    def lifecycle(self, lifecycle: AssociationLifecycle) -> None:
        for value in AssociationLifecycle:
            self._child(self.m.lifecycle, value.value).set(1 if value is lifecycle else 0)

    def backlog(self, entries: int, held: int) -> None:
        self._child(self.m.backlog).set(entries)
        self._child(self.m.held).set(held)

    def events(self, received: int, coalesced: int) -> None:
        if received:
            self._child(self.m.received).inc(received)
        if coalesced:
            self._child(self.m.coalesced).inc(coalesced)

    def batch(self, result: BatchResult) -> None:
        m = self.m
        self._child(m.batches).inc()
        for metric, n in ((m.exported, result.exported), (m.exported_bytes, result.exported_bytes),
                          (m.deleted, result.deleted), (m.deleted_bytes, result.deleted_bytes)):
            if n:
                self._child(metric).inc(n)
        for code, n in result.failures.items():
            self._child(m.failures, code).inc(n)
        lag = self._child(m.lag)
        for seconds in result.lags:
            lag.observe(seconds)
        if result.rescan_seconds is not None:
            self._child(m.rescan_seconds).set(result.rescan_seconds)
            self._child(m.rescan_time).set(result.rescan_end)

    def forget(self) -> None:
        for metric, values in self.children:
            try:
                metric.remove(*values)
            except KeyError:
                pass
        self.children.clear()


class ServiceMetrics:
    """The auto-export service's metrics for one file system."""

    def __init__(self, file_system_id: str):
        disable_created_metrics()  # no *_created series: counters start with the process anyway
        self.file_system_id = file_system_id
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        a = ("file_system_id", "association")
        self.lifecycle = Gauge("pfsxport_association_lifecycle", "1 for the association's current lifecycle "
                               "(AVAILABLE, MISCONFIGURED, FAILED, ...), 0 for the others", [*a, "lifecycle"],
                               registry=r)
        self.info = Gauge("pfsxport_association_info", "Always 1: the association's paths",
                          [*a, "file_system_path", "data_repository_path"], registry=r)
        self.backlog = Gauge("pfsxport_autoexport_backlog_entries", "Directories waiting to be looked at again, "
                             "plus 1 while a full rescan is due", a, registry=r)
        self.held = Gauge("pfsxport_autoexport_held_files", "Files written and not yet closed, held back", a,
                          registry=r)
        self.received = Counter("pfsxport_autoexport_events_received", "File-system events (inotify or changelog "
                                "changes) for the association", a, registry=r)
        self.coalesced = Counter("pfsxport_autoexport_events_coalesced", "Events that fell on a directory already "
                                 "in the backlog (no extra scan)", a, registry=r)
        self.exported = Counter("pfsxport_autoexport_exported_objects", "Objects written to S3 (files, "
                                "directories, symlinks)", a, registry=r)
        self.exported_bytes = Counter("pfsxport_autoexport_exported_bytes", "Bytes of the objects written "
                                      "(directory objects are empty)", a, registry=r)
        self.deleted = Counter("pfsxport_autoexport_deleted_objects", "Objects deleted from S3 (DELETED, and "
                               "the old keys of renames)", a, registry=r)
        self.deleted_bytes = Counter("pfsxport_autoexport_deleted_bytes", "Bytes of the objects deleted, as "
                                     "last exported", a, registry=r)
        self.failures = Counter("pfsxport_autoexport_failures", "Objects that could not be exported or deleted, "
                                "by FSx error code (each attempt)", [*a, "code"], registry=r)
        self.batches = Counter("pfsxport_autoexport_batches", "Batches run", a, registry=r)
        self.lag = Histogram("pfsxport_autoexport_lag_seconds", "From a change (the oldest pending change in "
                             "its directory: the inotify event read, or the changelog record's time) to its "
                             "object being durable in S3 (or deleted)", a, buckets=LAG_BUCKETS, registry=r)
        self.rescan_seconds = Gauge("pfsxport_autoexport_last_rescan_duration_seconds", "How long the last full "
                                    "rescan of the association took", a, registry=r)
        self.rescan_time = Gauge("pfsxport_autoexport_last_rescan_timestamp_seconds", "When the last full rescan "
                                 "ended (Unix time)", a, registry=r)
        cl = ("file_system_id", "mdt")
        self.records = Counter("pfsxport_changelog_records", "Lustre changelog records read", cl, registry=r)
        self.cursor_lag = Gauge("pfsxport_changelog_cursor_lag_records", "Changelog records (by index) read "
                                "and not yet cleared: their changes are not all durable in S3 yet", cl, registry=r)
        self.associations: dict[str, AssociationMetrics] = {}
        self._server = None
        self._thread = None

    def association(self, assoc: Association) -> AssociationMetrics:
        got = self.associations.get(assoc.association_id)
        if got is None:
            got = self.associations[assoc.association_id] = AssociationMetrics(self, assoc)
        return got

    def forget(self, association_id: str) -> None:
        got = self.associations.pop(association_id, None)
        if got is not None:
            got.forget()

    def changelog(self, mdt: str, records: int, lag: int) -> None:
        if records:
            self.records.labels(self.file_system_id, mdt).inc(records)
        self.cursor_lag.labels(self.file_system_id, mdt).set(lag)

    def serve(self, host: str, port: int) -> str:
        """Listen on host:port (0: any free port); the URL of /metrics. A config error when the
        address cannot be bound."""
        try:
            self._server, self._thread = start_http_server(port, host, self.registry)
        except OSError as e:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = "the address is in use" if e.errno == errno.EADDRINUSE else e.strerror or str(e)
            raise ConfigError(f"metrics.listen {where}: cannot listen: {reason}") from None
        bound = self._server.server_address[1]
        return f"http://[{host}]:{bound}/metrics" if ":" in host else f"http://{host}:{bound}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


def write_task_textfile(path: str, task: dict, tallies: list, elapsed: float) -> None:
    """An export task's metrics in node_exporter's textfile format, atomically: `task` is its
    FSx record (describe's shape), `tallies` each rank's share.Tally (rank order), `elapsed`
    seconds since it started. Gauges: a textfile is a snapshot of one task."""
    r = CollectorRegistry()
    base = ["task_id", "file_system_id"]
    ids = (task["TaskId"], task["FileSystemId"])
    g = Gauge("pfsxport_task_lifecycle", "1 for the task's lifecycle (PENDING ... SUCCEEDED, FAILED, CANCELED)",
              [*base, "lifecycle"], registry=r)
    g.labels(*ids, task["Lifecycle"]).set(1)
    st = task["Status"]
    counts = Gauge("pfsxport_task_entries", "Entries of the task by outcome (total = succeeded + failed)",
                   [*base, "outcome"], registry=r)
    summed = {f: sum(getattr(t, f) for t in tallies) for f in ("skipped", "unchanged", "deleted", "bytes_sent",
                                                               "retries", "discovered")}
    for outcome, value in (("total", st["TotalCount"]), ("succeeded", st["SucceededCount"]),
                           ("failed", st["FailedCount"]), ("skipped", summed["skipped"]),
                           ("unchanged", summed["unchanged"]), ("deleted", summed["deleted"]),
                           ("discovered", summed["discovered"])):
        counts.labels(*ids, outcome).set(value)
    Gauge("pfsxport_task_sent_bytes", "Bytes sent to the store", base, registry=r).labels(*ids).set(
        summed["bytes_sent"])
    Gauge("pfsxport_task_retries", "Requests retried", base, registry=r).labels(*ids).set(summed["retries"])
    Gauge("pfsxport_task_duration_seconds", "Seconds since the task started (its run time once it ended)", base,
          registry=r).labels(*ids).set(elapsed)
    Gauge("pfsxport_task_last_update_time_seconds", "When the task's record was last refreshed (Unix time)", base,
          registry=r).labels(*ids).set(st["LastUpdatedTime"])
    entries = Gauge("pfsxport_task_rank_entries", "Entries a rank exported or failed (its share of the work)",
                    [*base, "rank"], registry=r)
    sent = Gauge("pfsxport_task_rank_sent_bytes", "Bytes a rank sent", [*base, "rank"], registry=r)
    for rank, t in enumerate(tallies):
        entries.labels(*ids, str(rank)).set(t.total)
        sent.labels(*ids, str(rank)).set(t.bytes_sent)
    write_textfile(r, path)

