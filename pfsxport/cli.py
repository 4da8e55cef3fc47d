"""Command line: `pfsxport export`, `import`, `verify`, `task create|describe|cancel`,
`dra create|describe|update|delete`, `auto-export`, `demo`.

Exit codes are ExitCode (see the README). Under mpiexec/srun every rank runs `export`
(and `import`, `verify`); only rank 0 prints the task id, progress and errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys

from . import __version__
from .config import SCHEMA, ConfigError, default_state_dir, load, load_yaml
from .errors import ExitCode, PfsxError, TaskError
from .metadata import one_line

log = logging.getLogger("pfsxport")

# command-line flag -> config key (None values are "not given" and leave the file's value)
# the options of every command that talks to a store (as the boto3 chain names them)
STORE_FLAGS = {
    "endpoint_url": "s3.endpoint_url", "region": "s3.region", "profile": "s3.profile",
    "addressing_style": "s3.addressing_style", "sign_payload": "s3.sign_payload", "file_system_id": "file_system_id",
}
EXPORT_FLAGS = {
    **STORE_FLAGS,
    "fs_root": "fs_root", "repository": "repository", "report_path": "report_path",
    "state_dir": "state_dir", "checksum": "s3.checksum",
    "max_object_size": "s3.max_object_size", "part_size": "transfer.part_size",
    "multipart_threshold": "transfer.multipart_threshold", "stripe_size": "transfer.stripe_size",
    "concurrency": "transfer.concurrency", "parts_in_flight": "transfer.parts_in_flight",
    "reads_per_ost": "transfer.reads_per_ost",
    "lfs": "transfer.lfs", "progress": "progress.mode", "progress_interval": "progress.interval",
    "full": "full", "delete": "delete",
    "reconcile": "reconcile", "dry_run": "dry_run", "cancel_grace": "transfer.cancel_grace",
    "metrics_textfile": "metrics.textfile",
}


# `pfsxport import`: command-line flag -> config key
IMPORT_FLAGS = {
    **STORE_FLAGS,
    "fs_root": "fs_root", "repository": "repository", "report_path": "report_path", "state_dir": "state_dir",
    "part_size": "transfer.part_size", "concurrency": "transfer.concurrency",
    "parts_in_flight": "transfer.parts_in_flight", "cancel_grace": "transfer.cancel_grace",
    "progress": "progress.mode", "progress_interval": "progress.interval", "lfs": "transfer.lfs",
}


class OneLineFormatter(logging.Formatter):
    """Every log line is one line: names in messages cannot forge another (tracebacks, our
    own text, still follow on lines of their own)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


def _setup_logging(rank: int = 0) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(f"pfsxport[{rank}] %(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(handlers=[handler], level=logging.INFO if rank == 0 else logging.WARNING, force=True)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _store_options(p: argparse.ArgumentParser) -> None:
    """The options of STORE_FLAGS."""
    p.add_argument("--endpoint-url", help="S3 endpoint (default: the boto3 chain, e.g. AWS_ENDPOINT_URL)")
    p.add_argument("--region")
    p.add_argument("--profile", help="AWS profile for credentials")
    p.add_argument("--addressing-style", choices=["auto", "path", "virtual"])
    p.add_argument("--sign-payload", choices=["auto", "always", "never"],
                   help="SigV4 hash of each body: auto signs over http only (default)")
    p.add_argument("--file-system-id", help="fs-... id to record (default: derived from --fs-root)")


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see configs/); command-line options win")
    p.add_argument("--fs-root", help="the file-system mount (or tree) that task paths are relative to")
    p.add_argument("--repository", help="s3://BUCKET/PREFIX/ that the tree maps to (default: map paths through "
                   "the file system's data repository associations)")
    p.add_argument("--report-path", help="s3://BUCKET/PREFIX for {TaskId}/failures.csv "
                   "(default: s3://BUCKET/pfsxport-reports)")
    p.add_argument("--state-dir", help="task records and reports (default: $PFSXPORT_STATE_DIR or ~/.pfsxport)")
    _store_options(p)
    p.add_argument("--checksum", choices=["auto", "crc32", "none"])
    p.add_argument("--max-object-size", help="largest object the store takes (default 5TiB)")
    p.add_argument("--part-size", help="target multipart part size, rounded up to the stripe size (default 16MiB)")
    p.add_argument("--multipart-threshold", help="files above this go multipart (default 64MiB)")
    p.add_argument("--stripe-size", help="stripe size when `lfs` is not available (default 1MiB)")
    p.add_argument("--concurrency", help="small-file requests in flight per rank (default 64)")
    p.add_argument("--parts-in-flight", help="multipart parts in flight per rank (default 8)")
    p.add_argument("--reads-per-ost", help="part reads in flight per Lustre OST over all ranks (default 8; 0: no cap)")
    p.add_argument("--lfs", help="path of `lfs`, 'auto' (PATH) or 'off'")
    p.add_argument("--cancel-grace", help="after SIGTERM or SIGINT, seconds files in flight get to finish "
                   "before open uploads are aborted (default 15)")
    p.add_argument("--progress", choices=["auto", "bar", "log", "off"])
    p.add_argument("--progress-interval", help="seconds between progress lines (default 10)")
    p.add_argument("--full", action="store_true", default=None,
                   help="export every entry, not only those new or changed since their last export")
    p.add_argument("--delete", action="store_true", default=None,
                   help="also delete the objects of entries exported earlier that are gone (renamed or "
                        "removed); never touches keys pfsxport did not write")
    p.add_argument("--metrics-textfile", metavar="PATH",
                   help="write the task's Prometheus metrics to PATH (node_exporter's textfile collector), "
                        "at every status refresh and at the end")
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="walk, compare with the manifest and plan in full, then say what would be sent and "
                        "deleted (counts and bytes by kind, and the report); nothing is sent, deleted or recorded")
    p.add_argument("--reconcile", action="store_true", default=None,
                   help="list each repository prefix once first and export again what is missing there "
                        "(objects deleted behind pfsxport's back), then export as usual")
    p.add_argument("paths", nargs="*", metavar="PATH", help="paths relative to --fs-root (default: all)")


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", choices=["json", "table"], default="json",
                   help="json: the FSx API's JSON (default); table: boxes for people, as `aws --output table`")


def _print_described(operation: str, document: dict, output: str, ensure_ascii: bool = True) -> None:
    """A describe command's answer: FSx JSON, or the same document drawn as a table."""
    if output == "table":
        from .table import render

        sys.stdout.write(render(operation, document))
    else:
        print(json.dumps(document, indent=4, ensure_ascii=ensure_ascii))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pfsxport", description="Export a POSIX/Lustre tree to S3 the way "
                                "FSx for Lustre data repositories do, in parallel over MPI.")
    p.add_argument("--version", action="version", version=f"pfsxport {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="create an export task and run it now (every MPI rank runs this)")
    _export_options(e)
    e.add_argument("--task-id", help="run this PENDING task (from `task create`) with its recorded options")

    i = sub.add_parser("import", help="create an import task (IMPORT_METADATA_FROM_REPOSITORY) and run it now: "
                       "restore a tree from its repository (every MPI rank runs this)")
    i.add_argument("--config", help="YAML config file (see configs/); command-line options win")
    i.add_argument("--fs-root", help="the directory the repository's tree is restored into")
    i.add_argument("--repository", help="s3://BUCKET/PREFIX/ that the tree maps to (default: the file system's "
                   "data repository associations)")
    i.add_argument("--report-path", help="s3://BUCKET/PREFIX for {TaskId}/report.csv "
                   "(default: s3://BUCKET/pfsxport-reports)")
    i.add_argument("--state-dir", help="task records and reports (default: $PFSXPORT_STATE_DIR or ~/.pfsxport)")
    _store_options(i)
    i.add_argument("--part-size", help="objects above this come down as ranged GETs of this size (default 16MiB)")
    i.add_argument("--concurrency", help="objects in flight per rank (default 64)")
    i.add_argument("--parts-in-flight", help="ranged GETs in flight per rank (default 8)")
    i.add_argument("--cancel-grace", help="after SIGTERM or SIGINT, seconds objects in flight get to finish")
    i.add_argument("--progress", choices=["auto", "log", "off"], help="progress lines in the log (default auto: on)")
    i.add_argument("--progress-interval", help="seconds between progress lines (default 10)")
    i.add_argument("--lfs", help="path of `lfs` to create large files with on Lustre, 'auto' (PATH, the default) "
                   "or 'off'")
    i.add_argument("--setstripe", default="auto", metavar="OPTIONS",
                   help="lfs setstripe options for new large files, e.g. \"-c 4 -S 4M\"; 'auto' (default): "
                        "files of 1 GiB or more get one stripe per GiB (at most 32); 'off': the directory's default")
    i.add_argument("--setstripe-min", default="64MiB",
                   help="files at least this large get --setstripe's options (default 64MiB)")
    i.add_argument("--metadata-only", action="store_true",
                   help="restore directories, symlinks and each file's owner, mode and times, with files left "
                        "empty (no data is downloaded)")
    i.add_argument("--no-overwrite", action="store_true",
                   help="keep entries already in the target (default: the repository wins, as in FSx)")
    i.add_argument("paths", nargs="*", metavar="PATH",
                   help="s3://BUCKET/KEY URLs inside the repository, or file-system paths (relative to --fs-root) "
                        "that name the keys they were exported to (default: the whole repository)")

    v = sub.add_parser("verify", help="compare the tree with its repository (every MPI rank runs this); exit 0 "
                       "only when they match, 8 when they differ")
    v.add_argument("--config", help="YAML config file (the export's: fs_root, repository, state_dir, s3.*)")
    v.add_argument("--fs-root", help="the file-system mount (or tree) that paths are relative to")
    v.add_argument("--repository", help="s3://BUCKET/PREFIX/ the tree was exported to (default: the file "
                   "system's data repository associations)")
    v.add_argument("--state-dir", help="associations, and the report's default place (default: "
                   "$PFSXPORT_STATE_DIR or ~/.pfsxport)")
    v.add_argument("--report-dir", help="write verify.csv, verify.h5 and summary.json here (default: "
                   "STATE_DIR/verify/verify-TIME-ID)")
    v.add_argument("--contents", action="store_true",
                   help="download every object and compare every byte (default: size and the stored CRC32)")
    v.add_argument("--quick", action="store_true",
                   help="an entry unchanged since its export (its lstat is the manifest's record) whose object is "
                        "listed with its size matches without a HEAD or a read: a listing-only check of an "
                        "unchanged tree, which trusts that nobody rewrote its objects in the bucket")
    _store_options(v)
    v.add_argument("--concurrency", help="objects compared at a time per rank (default 64)")
    v.add_argument("paths", nargs="*", metavar="PATH", help="paths relative to --fs-root (default: all)")

    t = sub.add_parser("task", help="create, describe or cancel tasks")
    tsub = t.add_subparsers(dest="task_command", required=True)
    c = tsub.add_parser("create", help="record a PENDING export task; with --submit, hand it to Slurm")
    _export_options(c)
    c.add_argument("--submit", action="store_true", help="submit the task as a Slurm batch job")
    c.add_argument("--sbatch", default="", metavar="OPTIONS",
                   help="sbatch options, e.g. \"--ntasks=8 --time=2:00:00 --partition=io\"")
    c.add_argument("--launcher", default="srun --mpi=pmi2", help="how the job starts the ranks "
                   "(default: \"srun --mpi=pmi2\"; or \"mpiexec -n 8\")")
    for name, helptext in (("describe", "print tasks as FSx DescribeDataRepositoryTasks JSON"),
                           ("cancel", "cancel a PENDING or EXECUTING task")):
        c = tsub.add_parser(name, help=helptext)
        c.add_argument("--state-dir")
        c.add_argument("--config")
        if name == "describe":
            c.add_argument("task_ids", nargs="*", metavar="TASK_ID")
            c.add_argument("--filter", action="append", default=[],
                           help="Name=task-lifecycle,Values=EXECUTING,FAILED (repeatable)")
            _output_option(c)
        else:
            c.add_argument("task_id", metavar="TASK_ID")

    a = sub.add_parser("dra", help="data repository associations (FSx DRAs)")
    asub = a.add_subparsers(dest="dra_command", required=True)
    for name, helptext in (("create", "link a file-system path to an S3 prefix"),
                           ("describe", "print associations as FSx DescribeDataRepositoryAssociations JSON"),
                           ("update", "change an association's auto-export policy (its paths are fixed)"),
                           ("delete", "remove an association (its objects in S3 stay; its files too "
                                      "unless --delete-data-in-file-system)")):
        c = asub.add_parser(name, help=helptext)
        c.add_argument("--config")
        c.add_argument("--fs-root", help="the file-system mount the association's path lies in")
        c.add_argument("--state-dir")
        c.add_argument("--file-system-id")
        if name == "create":
            c.add_argument("--file-system-path", required=True, help="absolute inside the file system, e.g. /results")
            c.add_argument("--data-repository-path", required=True, help="s3://BUCKET/PREFIX/")
        if name in ("create", "update"):  # both check the repository (a marker written and removed)
            c.add_argument("--events", default=None, help="auto-export events: a comma list of NEW, CHANGED, "
                           "DELETED (empty: auto-export off)")
            c.add_argument("--endpoint-url")
            c.add_argument("--profile")
            c.add_argument("--region")
            c.add_argument("--addressing-style", choices=["auto", "path", "virtual"])
        if name in ("update", "delete"):
            c.add_argument("association_id", metavar="ASSOCIATION_ID")
        if name == "delete":
            c.add_argument("--delete-data-in-file-system", action="store_true",
                           help="also delete the files and directories under the association's FileSystemPath "
                                "(its objects in S3 stay)")
        if name == "describe":
            c.add_argument("association_ids", nargs="*", metavar="ASSOCIATION_ID")
            _output_option(c)

    x = sub.add_parser("auto-export", help="run the auto-export service of a file system's associations "
                       "(long-running; stop it with SIGTERM)")
    x.add_argument("--config", help="YAML config file (fs_root, state_dir, s3.*, transfer.*, auto_export.*)")
    x.add_argument("--fs-root", help="the file-system mount the associations' paths lie in")
    x.add_argument("--state-dir")
    _store_options(x)
    x.add_argument("--checksum", choices=["auto", "crc32", "none"])
    x.add_argument("--concurrency", help="requests in flight (default 64)")
    x.add_argument("--lfs", help="path of `lfs`, 'auto' (PATH) or 'off'")
    x.add_argument("--source", choices=["auto", "inotify", "changelog", "poll"],
                   help="event source (default auto: the Lustre changelog when --changelog-mdt is given, else inotify)")
    x.add_argument("--changelog-mdt", help="MDT whose changelog to read, e.g. testfs-MDT0000")
    x.add_argument("--changelog-user", help="registered changelog user, e.g. cl1")
    x.add_argument("--debounce", help="seconds changes gather before a batch goes (default 0.5)")
    x.add_argument("--rescan-interval",
                   help="seconds between full rescans against the manifest (default 600; 0: never)")
    x.add_argument("--recheck-interval", help="seconds between probes of a MISCONFIGURED repository (default 30)")
    x.add_argument("--hold-timeout", help="a file being written is held until no write was seen for this long "
                   "(default 60)")
    x.add_argument("--log-level", choices=["DISABLED", "WARN_ONLY", "ERROR_ONLY", "WARN_ERROR"],
                   help="event log level (default WARN_ERROR)")
    x.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9817 (default: off)")

    r = sub.add_parser("report", help="look at a task's report")
    rsub = r.add_subparsers(dest="report_command", required=True)
    rp = rsub.add_parser("plot", help="one picture of a task: throughput, balance over ranks, sizes, failures "
                         "(needs pip install 'pfsxport[plot]')")
    rp.add_argument("task_id", metavar="TASK_ID")
    rp.add_argument("-o", "--output", help="FILE.png or FILE.svg (default: report.png in the task's report "
                    "directory in the state directory)")
    rp.add_argument("--size", default="1600x1000", help="WIDTHxHEIGHT in pixels (default 1600x1000)")
    rp.add_argument("--state-dir")
    rp.add_argument("--config")

    d = sub.add_parser("demo", help="start a local SeaweedFS, export a sample tree with mpiexec, show the result")
    d.add_argument("--ranks", type=int, default=2)
    d.add_argument("--workdir", help="keep the sample tree, state and server data here")
    return p


_FILTERS = ("file-system-id", "task-lifecycle", "data-repository-association-id")


def _parse_filter(text: str) -> tuple[str, list[str]]:
    """One DescribeDataRepositoryTasks filter; a name or a lifecycle that does not exist is
    an error (FSx answers BadRequest), not a filter that silently matches nothing."""
    from .lifecycle import TaskLifecycle

    parts = dict(kv.split("=", 1) for kv in _split_filter(text))
    if "Name" not in parts or "Values" not in parts:
        raise ConfigError(f"--filter {text!r}: expected Name=NAME,Values=V1,V2")
    name, values = parts["Name"], [v for v in parts["Values"].split(",") if v]
    if name not in _FILTERS:
        raise ConfigError(f"--filter {text!r}: unknown filter name {name!r} (use {', '.join(_FILTERS)})")
    if not values:
        raise ConfigError(f"--filter {text!r}: no values")
    bad = [v for v in values if name == "task-lifecycle" and v not in TaskLifecycle.__members__]
    if bad:
        raise ConfigError(f"--filter {text!r}: {', '.join(bad)} is not a task lifecycle "
                          f"({', '.join(TaskLifecycle.__members__)})")
    return name, values


def _split_filter(text: str) -> list[str]:
    head, sep, values = text.partition(",Values=")
    if not sep:
        raise ConfigError(f"--filter {text!r}: expected Name=NAME,Values=V1,V2")
    if "=" not in head:
        raise ConfigError(f"--filter {text!r}: expected Name=NAME,Values=V1,V2")
    return [head, "Values=" + values]


def _state_dir(args) -> str:
    if args.state_dir:
        return args.state_dir
    if args.config:
        value = load_yaml(args.config).get("state_dir")
        if value is not None:
            try:
                return SCHEMA["state_dir"](value)
            except ValueError as e:
                raise ConfigError(f"key 'state_dir' in {args.config}: {e}") from None
    return default_state_dir()


def _export_argv(args) -> list[str]:
    """The export options of a parsed command line, as arguments again (absolute config)."""
    out = ["--config", os.path.abspath(args.config)] if args.config else []
    for flag in EXPORT_FLAGS:
        v = getattr(args, flag)
        if v is not None:
            opt = "--" + flag.replace("_", "-")
            out += [opt] if v is True else [opt, str(v)]
    return out + list(args.paths)


def _create(args, state) -> int:
    """`task create`: record a PENDING task (FSx CreateDataRepositoryTask); with --submit,
    submit `pfsxport export --task-id` as a Slurm job."""
    from .job import check_repository, new_record

    cli = {key: getattr(args, flag) for flag, key in EXPORT_FLAGS.items()}
    cli["paths"] = args.paths or None
    cfg = load(args.config, cli, need_repository=False)
    check_repository(cfg)
    rec = new_record(cfg)
    argv = _export_argv(args)
    if not args.state_dir:
        argv = ["--state-dir", state.root] + argv
    rec.request = {"Args": argv, "Cwd": os.getcwd()}
    rec.slurm_job_id = None
    state.create(rec)
    if args.submit:
        run = f"{args.launcher} {shlex.quote(sys.executable)} -m pfsxport export --task-id {rec.task_id} " \
              f"--state-dir {shlex.quote(state.root)}"
        cmd = ["sbatch", "--parsable", f"--job-name=pfsxport-{rec.task_id}", *shlex.split(args.sbatch),
               "--wrap", run]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            r = subprocess.CompletedProcess(cmd, 1, "", str(e))
        if r.returncode != 0:
            rec.fail(f"sbatch failed: {r.stderr.strip()}"[:256])
            state.write(rec)
            raise ConfigError(f"sbatch failed ({' '.join(cmd)}): {r.stderr.strip()}")
        rec.slurm_job_id = r.stdout.strip().split(";")[0]
        state.write(rec)
        log.info("task %s submitted as Slurm job %s", rec.task_id, rec.slurm_job_id)
    print(json.dumps({"DataRepositoryTask": rec.to_fsx()}, indent=4, ensure_ascii=False))
    return 0


def _dra(args) -> int:
    """`pfsxport dra ...`: association records in the state directory, per file system."""
    from .config import file_system_id_for
    from .dra import Association, AssociationLifecycle, new_association_id, normalize_events, validate_new
    from .state import StateDir
    from .walk import refuse_symlinks

    state = StateDir(_state_dir(args))
    root = args.fs_root or (load_yaml(args.config).get("fs_root") if args.config else None)
    fsid = args.file_system_id or (file_system_id_for(os.path.abspath(root)) if root else None)
    if not fsid:
        raise ConfigError("give --fs-root (or --file-system-id, or a --config with fs_root)")
    events = None if getattr(args, "events", None) is None else [e for e in args.events.split(",") if e]
    if args.dra_command == "describe":
        assocs = [a for a in state.associations(fsid) if not args.association_ids
                  or a.association_id in args.association_ids]
        missing = set(args.association_ids) - {a.association_id for a in assocs}
        if missing:
            raise TaskError("DataRepositoryAssociationNotFound", ", ".join(sorted(missing)))
        _print_described("DescribeDataRepositoryAssociations", {"Associations": [a.to_fsx() for a in assocs]},
                         args.output)
        return 0
    if args.dra_command == "create":
        if not root:
            raise ConfigError("dra create needs --fs-root (or a --config with fs_root)")
        with state.editing_associations(fsid) as assocs:
            fs_path, repo, evs = validate_new(assocs, args.file_system_path, args.data_repository_path,
                                              events or [])
            refuse_symlinks(root, fs_path.strip("/"), "FileSystemPath", last=True)
            if not os.path.isdir(os.path.join(root, fs_path.lstrip("/"))):
                raise ConfigError(f"FileSystemPath {fs_path} is not a directory under {root}")
            new = Association(new_association_id(), fsid, fs_path, repo, evs)
            assocs.append(new)
        _check_repository(args, root, new)
        _save_lifecycle(state, fsid, new)
        print(json.dumps({"Association": new.to_fsx()}, indent=4))
        return 0
    with state.editing_associations(fsid) as assocs:
        found = [a for a in assocs if a.association_id == args.association_id]
        if not found:
            raise TaskError("DataRepositoryAssociationNotFound", args.association_id)
        a = found[0]
        if args.dra_command == "update":  # UPDATING until the repository is checked again
            a.events = normalize_events(events if events is not None else a.events)
        a.lifecycle, a.failure_message = (AssociationLifecycle.UPDATING if args.dra_command == "update"
                                          else AssociationLifecycle.DELETING), None
    if args.dra_command == "update":
        if root:
            _check_repository(args, root, a)
        else:
            a.lifecycle = AssociationLifecycle.AVAILABLE
        _save_lifecycle(state, fsid, a)
        print(json.dumps({"Association": a.to_fsx()}, indent=4))
        return 0
    if args.delete_data_in_file_system:
        if not root:
            raise ConfigError("--delete-data-in-file-system needs --fs-root (or a --config with fs_root)")
        refuse_symlinks(root, a.file_system_path.strip("/"), "FileSystemPath", last=True)
        _delete_data(os.path.join(root, a.file_system_path.lstrip("/")))
    with state.editing_associations(fsid) as assocs:
        assocs[:] = [x for x in assocs if x.association_id != a.association_id]
    print(json.dumps({"AssociationId": a.association_id, "Lifecycle": "DELETING",
                      "DeleteDataInFileSystem": bool(args.delete_data_in_file_system)}, indent=4))
    return 0


def _save_lifecycle(state, fsid: str, assoc) -> None:
    with state.editing_associations(fsid) as assocs:
        for i, x in enumerate(assocs):
            if x.association_id == assoc.association_id:
                assocs[i] = assoc


def _delete_data(path: str) -> None:
    """DeleteDataInFileSystem: remove what lies under the association's path (the
    directory itself stays, as the mount point of nothing)."""
    import shutil

    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def _check_repository(args, root: str, assoc) -> None:
    """CREATING -> AVAILABLE when the bucket is reachable and writable (a marker object is
    written and removed), else MISCONFIGURED with the reason."""
    from .dra import AssociationLifecycle
    from .errors import StoreError
    from .metadata import parse_s3_url
    from .store import S3Store

    cli = {"fs_root": root, "repository": assoc.data_repository_path, "s3.endpoint_url": args.endpoint_url,
           "s3.profile": args.profile, "s3.region": args.region, "s3.addressing_style": args.addressing_style}
    cfg = load(args.config, cli)
    url = parse_s3_url(assoc.data_repository_path)
    try:
        S3Store(url.bucket, cfg.s3).probe(url.prefix, "none")
        assoc.lifecycle = AssociationLifecycle.AVAILABLE
    except StoreError as e:
        assoc.lifecycle = AssociationLifecycle.MISCONFIGURED
        assoc.failure_message = f"the data repository cannot be written: {e}"[:256]


def _task(args) -> int:
    from .state import StateDir, matches

    state = StateDir(_state_dir(args))
    if args.task_command == "create":
        return _create(args, state)
    if args.task_command == "cancel":
        rec = state.request_cancel(args.task_id)
        print(json.dumps({"Lifecycle": rec.lifecycle.value, "TaskId": rec.task_id}, indent=4))
        return 0
    filters = [_parse_filter(f) for f in args.filter]
    if not os.path.isdir(state.tasks):
        print(f"pfsxport: warning: no task records: {state.tasks} does not exist", file=sys.stderr)
    if args.task_ids:
        recs = [state.read(i) for i in args.task_ids]
    else:
        recs = list(state.all())
    recs = [state.reap(r) for r in recs if matches(r, filters)]
    recs.sort(key=lambda r: r.creation_time)
    _print_described("DescribeDataRepositoryTasks", {"DataRepositoryTasks": [r.to_fsx() for r in recs]}, args.output,
                     ensure_ascii=False)
    return 0


def _collective(world, run) -> int:
    """Run a collective command on this rank: its exit code; an error no task record could
    take is logged, and under MPI it ends every rank (a rank left alone would wait forever)."""
    try:
        return int(run())
    except PfsxError as e:  # e.g. the state directory failed where no record could take the reason
        log.error("%s", e)
        if world.size > 1:
            world.abort(e.exit_code)
        return e.exit_code
    except Exception:
        log.exception("pfsxport crashed on rank %d of %d (%s)", world.rank, world.size, world.host)
        if world.size > 1:
            world.abort(ExitCode.INTERNAL)
        return ExitCode.INTERNAL


def _watched(run, args) -> int:
    """`run(args, watch)` with SIGTERM and SIGINT cancelling the task from here on (see halt and
    job.Monitor); the previous handlers are back once it has ended."""
    from .halt import SignalWatch

    with SignalWatch() as watch:
        return run(args, watch)


def _run_export(args, watch) -> int:
    from .parallel import World

    world = World()
    _setup_logging(world.rank)
    try:
        task_id = args.task_id
        if task_id:  # a PENDING task: its recorded options, from where it was created
            from .state import StateDir

            request = StateDir(_state_dir(args)).read(task_id).request or {}
            args = _parser().parse_args(["export", *request.get("Args", [])])
            os.chdir(request.get("Cwd") or os.getcwd())
        cli = {key: getattr(args, flag) for flag, key in EXPORT_FLAGS.items()}
        cli["paths"] = args.paths or None
        cfg = load(args.config, cli, need_repository=False)
        from .job import check_repository

        check_repository(cfg)
        cfg.task_id = task_id or ""
        watch.grace = cfg.transfer.cancel_grace
    except PfsxError as e:
        if world.rank == 0:
            log.error("%s", e)
        return e.exit_code
    from .job import export

    return _collective(world, lambda: export(world, cfg, watch))


VERIFY_FLAGS = {
    **STORE_FLAGS,
    "fs_root": "fs_root", "repository": "repository", "state_dir": "state_dir", "concurrency": "transfer.concurrency",
}


def _run_verify(args, watch) -> int:
    """`pfsxport verify` on every rank: the config as export reads it, then verify.verify.
    SIGTERM and SIGINT stop it (exit 4)."""
    from .parallel import World

    world = World()
    _setup_logging(world.rank)
    try:
        cli = {key: getattr(args, flag) for flag, key in VERIFY_FLAGS.items()}
        cli["paths"] = args.paths or None
        cfg = load(args.config, cli, need_repository=False)
    except PfsxError as e:
        if world.rank == 0:
            log.error("%s", e)
        return e.exit_code
    from .verify import verify

    return _collective(world, lambda: verify(world, cfg, args.contents, args.report_dir, watch, args.quick))


def _run_import(args, watch) -> int:
    """`pfsxport import` on every rank: SIGTERM and SIGINT cancel the task, as for export."""
    from .parallel import World

    world = World()
    _setup_logging(world.rank)
    try:
        cli = {key: getattr(args, flag) for flag, key in IMPORT_FLAGS.items()}
        cli["paths"] = args.paths or None
        cfg = load(args.config, cli, need_repository=False)
        from .job import check_repository

        check_repository(cfg)  # --repository, or the file system's associations
        watch.grace = cfg.transfer.cancel_grace
    except PfsxError as e:
        if world.rank == 0:
            log.error("%s", e)
        return e.exit_code
    import shutil

    from .importjob import run_import
    from .plan import parse_size
    from .restore import FetchOptions

    t = cfg.transfer
    lfs = None if t.lfs == "off" else shutil.which("lfs") if t.lfs == "auto" else t.lfs
    try:
        minimum = parse_size(args.setstripe_min)
    except ValueError as e:
        if world.rank == 0:
            log.error("--setstripe-min %r: %s", args.setstripe_min, e)
        return ExitCode.BAD_INPUT
    opts = FetchOptions(concurrency=t.concurrency, ranges_in_flight=t.parts_in_flight, range_size=t.part_size,
                        metadata_only=args.metadata_only, no_overwrite=args.no_overwrite, lfs=lfs,
                        setstripe=args.setstripe, setstripe_min=minimum)
    return _collective(world, lambda: run_import(world, cfg, opts, watch))


def _plot(args) -> int:
    """`report plot`: the picture of a task from its report.h5 in the state directory."""
    from .report import REPORT_H5
    from .state import StateDir

    state = StateDir(_state_dir(args))
    state.read(args.task_id)  # DataRepositoryTaskNotFound, or a corrupt record, said as such
    report = os.path.join(state.task_dir(args.task_id), REPORT_H5)
    if not os.path.exists(report):
        raise TaskError("ReportNotFound", f"task {args.task_id} has no report yet ({report})")
    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1600x1000") from None
    try:
        from .plot import plot
    except ImportError as e:
        raise ConfigError(f"report plot needs matplotlib: pip install 'pfsxport[plot]' ({e})") from None
    out = args.output or os.path.join(state.task_dir(args.task_id), "report.png")
    plot(report, out, width, height)
    print(out)
    return 0


AUTO_EXPORT_FLAGS = {
    **STORE_FLAGS,
    "fs_root": "fs_root", "state_dir": "state_dir", "checksum": "s3.checksum",
    "concurrency": "transfer.concurrency",
    "lfs": "transfer.lfs", "source": "auto_export.source", "changelog_mdt": "auto_export.changelog_mdt",
    "changelog_user": "auto_export.changelog_user", "debounce": "auto_export.debounce",
    "rescan_interval": "auto_export.rescan_interval", "recheck_interval": "auto_export.recheck_interval",
    "hold_timeout": "auto_export.hold_timeout", "log_level": "event_log.level",
    "metrics_listen": "metrics.listen",
}


def _auto_export(args) -> int:
    from .autoexport import serve

    cfg = load(args.config, {key: getattr(args, flag) for flag, key in AUTO_EXPORT_FLAGS.items()},
               need_repository=False)
    return serve(cfg)


# options whose value is itself a command line: `--sbatch "--ntasks=2"` is that value, not an option
_COMMAND_LINE_VALUES = ("--sbatch", "--launcher")


def _join_command_line_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _COMMAND_LINE_VALUES and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_join_command_line_values(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "export":
            return _watched(_run_export, args)
        if args.command == "import":
            return _watched(_run_import, args)
        if args.command == "verify":
            return _watched(_run_verify, args)
        _setup_logging()
        if args.command == "task":
            return _task(args)
        if args.command == "dra":
            return _dra(args)
        if args.command == "auto-export":
            return _auto_export(args)
        if args.command == "report":
            return _plot(args)
        if args.command == "demo":
            from .demo import demo

            return demo(args.ranks, args.workdir)
    except TaskError as e:
        print(f"pfsxport: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except PfsxError as e:
        print(f"pfsxport: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    return ExitCode.INTERNAL


def console() -> None:
    sys.exit(main())
