"""Client cost of the signed request path: the project's SigV4 signer + httpconn against awscrt
(AWS's common runtime: signing and HTTP in C) and botocore, same server, same requests, same run.

Usage (the project's virtualenv with the bench extra: pip install -e '.[bench]'):

    python bench/crt.py [--small 5000] [--small-size 4096] [--parts 32] [--part-size 16]
                        [--threads 16] [--repeat 3] [--clients project,crt,botocore]
                        [--workloads small,parts,parts-unsigned] [--out DIR]

What it does:
1. Starts ONE SeaweedFS (pfsxport.localstore.SeaweedFS) in a temporary directory.
2. Workloads, each on a fresh bucket per run (its first volume allocated by a probe PUT before
   the clock starts):
     small           N PUTs of distinct small objects (default 5,000 x 4 KiB), with the six FSx
                     metadata headers and x-amz-checksum-crc32, payload signed (the project's
                     default over http);
     parts           M UploadParts (default 32 x 16 MiB) of one multipart upload, with
                     x-amz-checksum-crc32, payload signed;
     parts-unsigned  the same with UNSIGNED-PAYLOAD (the project's default over https).
   Bodies and their CRC32 are made before the clock starts (the export computes the CRC while
   reading, whatever the client).
3. Clients, each in a process of its own (nothing of one is loaded in the other), T threads
   (default 16) taking requests from one queue, one connection per thread:
     project    pfsxport.store.S3Store: put_object / upload_part through its own signer and
                httpconn (the path an export takes);
     crt        awscrt.auth.aws_sign_request + awscrt.http.HttpClientConnection (one per thread),
                the body hashed by awscrt when it is signed;
     botocore   botocore's client (put_object / upload_part) configured as the store configures
                it, with BOTO_DISABLE_CRT=true: its pure-Python signer, as installed without awscrt.
   The client order rotates from repeat to repeat. Each worker builds its client and sends one
   request before its clock starts, then reports wall time and its own CPU (all of the
   process, getrusage: every thread, the CRT's event-loop threads included).
4. After each run the bucket is checked (count and sizes; for parts the completed object's size;
   a sample read back byte for byte), then deleted.
5. Prints a Markdown table: medians of the repeats with min-max, requests/s and MB/s at the
   median wall, client CPU ms per request, server CPU ms per request (the weed process, from
   /proc), and ratios to the project's path (wall and client CPU per request; ratio of medians).
   Never asserts a speed. Exits 1 if a run or a check failed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import queue
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

KiB, MiB = 1 << 10, 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
META = {"file-permissions": "0100644", "file-owner": "1000", "file-group": "100",
        "file-atime": "1700000000123456789ns", "file-mtime": "1700000000123456789ns", "user-agent": "aws-fsx-lustre"}
CTYPE = "application/octet-stream"
REGION = "us-east-1"
DISTINCT_PARTS = 4  # distinct part bodies, reused round-robin (memory)


# ---------------------------------------------------------------------------------------------- worker

def bodies(spec: dict) -> list[bytes]:
    rng = random.Random(7)
    if spec["workload"] == "small":
        return [rng.randbytes(spec["size"]) for _ in range(spec["count"])]
    distinct = [rng.randbytes(spec["size"]) for _ in range(DISTINCT_PARTS)]
    return [distinct[i % DISTINCT_PARTS] for i in range(spec["count"])]


class ProjectClient:
    """pfsxport.store.S3Store, as an export uses it."""

    def __init__(self, spec: dict):
        from pfsxport.config import S3Settings
        from pfsxport.store import S3Store

        sign = "always" if spec["signed"] else "never"
        self.store = S3Store(spec["bucket"], S3Settings(endpoint_url=spec["endpoint"], region=REGION,
                                                         addressing_style="path", sign_payload=sign),
                             pool=spec["threads"])
        assert self.store.fast is not None, "the store does not sign these requests itself"
        self.store.checksum = True

    def put(self, key: str, body: bytes, crc: int) -> None:
        self.store.put_object(key, body, META, CTYPE, crc)

    def create(self, key: str) -> str:
        return self.store.create_multipart(key, META, CTYPE)

    def part(self, key: str, upload: str, n: int, body: bytes, crc: int) -> tuple[str, str]:
        return self.store.upload_part(key, upload, n, body, crc)

    def complete(self, key: str, upload: str, parts: list) -> None:
        self.store.complete_multipart(key, upload, parts)


class BotocoreClient:
    """botocore's client, configured as S3Store.client is (its retries off: none are expected)."""

    def __init__(self, spec: dict):
        import botocore.config
        import botocore.session

        cfg = botocore.config.Config(
            region_name=REGION, s3={"addressing_style": "path", "payload_signing_enabled": spec["signed"]},
            retries={"total_max_attempts": 1}, max_pool_connections=spec["threads"], tcp_keepalive=True,
            request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self.c = botocore.session.Session().create_client("s3", endpoint_url=spec["endpoint"], config=cfg)
        self.bucket = spec["bucket"]
        from pfsxport.store import crc32_b64

        self.b64 = crc32_b64

    def put(self, key: str, body: bytes, crc: int) -> None:
        self.c.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=META, ContentType=CTYPE,
                          ChecksumCRC32=self.b64(crc))

    def create(self, key: str) -> str:
        return self.c.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=META, ContentType=CTYPE,
                                              ChecksumAlgorithm="CRC32")["UploadId"]

    def part(self, key: str, upload: str, n: int, body: bytes, crc: int) -> tuple[str, str]:
        r = self.c.upload_part(Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=n, Body=body,
                               ChecksumCRC32=self.b64(crc))
        return r["ETag"], r.get("ChecksumCRC32", "")

    def complete(self, key: str, upload: str, parts: list) -> None:
        self.c.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e, "ChecksumCRC32": c} for n, e, c in parts]})


class CrtClient:
    """awscrt: aws_sign_request (SigV4 in C, the body hashed in C when signed) and one
    HttpClientConnection per thread. Multipart create/complete go through botocore (not timed)."""

    def __init__(self, spec: dict):
        from urllib.parse import quote, urlsplit

        from awscrt import auth, http
        from awscrt import io as crtio

        self.auth, self.http, self.quote = auth, http, quote
        u = urlsplit(spec["endpoint"])
        self.host, self.port, self.netloc = u.hostname, u.port or 80, u.netloc
        self.prefix = f"/{spec['bucket']}/"
        self.bootstrap = crtio.ClientBootstrap.get_or_create_static_default()
        self.provider = auth.AwsCredentialsProvider.new_static(os.environ["AWS_ACCESS_KEY_ID"],
                                                               os.environ["AWS_SECRET_ACCESS_KEY"])
        self.body_value = None if spec["signed"] else auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD
        self.tls = threading.local()
        self.botocore = BotocoreClient(spec)
        from pfsxport.store import crc32_b64

        self.b64 = crc32_b64

    def _conn(self):
        c = getattr(self.tls, "conn", None)
        if c is None or not c.is_open():
            c = self.tls.conn = self.http.HttpClientConnection.new(self.host, self.port, self.bootstrap).result()
        return c

    def _send(self, method: str, key: str, query: str, headers: list[tuple[str, str]], body: bytes):
        a, h = self.auth, self.http
        path = self.prefix + self.quote(key.encode(), safe="/~") + query
        req = h.HttpRequest(method, path, h.HttpHeaders(
            [("host", self.netloc), ("content-length", str(len(body)))] + headers), io.BytesIO(body))
        cfg = a.AwsSigningConfig(a.AwsSigningAlgorithm.V4, a.AwsSignatureType.HTTP_REQUEST_HEADERS, self.provider,
                                 REGION, "s3", use_double_uri_encode=False, should_normalize_uri_path=False,
                                 signed_body_value=self.body_value,
                                 signed_body_header_type=a.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256)
        a.aws_sign_request(req, cfg).result()
        got: dict = {}
        data = []

        def on_response(http_stream, status_code, headers, **_):
            got["status"], got["headers"] = status_code, {k.lower(): v for k, v in headers}

        stream = self._conn().request(req, on_response, lambda http_stream, chunk, **_: data.append(bytes(chunk)))
        stream.activate()
        stream.completion_future.result()
        if not 200 <= got["status"] < 300:
            raise RuntimeError(f"{method} {path}: {got['status']} {b''.join(data)[:200]!r}")
        return got["headers"]

    def put(self, key: str, body: bytes, crc: int) -> None:
        self._send("PUT", key, "", [("content-type", CTYPE), ("x-amz-checksum-crc32", self.b64(crc))]
                   + [("x-amz-meta-" + k, v) for k, v in META.items()], body)

    def create(self, key: str) -> str:
        return self.botocore.create(key)

    def part(self, key: str, upload: str, n: int, body: bytes, crc: int) -> tuple[str, str]:
        sent = self.b64(crc)
        h = self._send("PUT", key, f"?partNumber={n}&uploadId={self.quote(upload, safe='')}",
                       [("x-amz-checksum-crc32", sent)], body)
        return h.get("etag", ""), h.get("x-amz-checksum-crc32", "") or sent

    def complete(self, key: str, upload: str, parts: list) -> None:
        self.botocore.complete(key, upload, parts)


CLIENTS = {"project": ProjectClient, "crt": CrtClient, "botocore": BotocoreClient}


def in_threads(threads: int, jobs: list, fn) -> list:
    """fn(job) for every job on `threads` threads taking them from one queue; results in job order."""
    q: queue.SimpleQueue = queue.SimpleQueue()
    for i, j in enumerate(jobs):
        q.put((i, j))
    out: list = [None] * len(jobs)
    errors: list = []

    def run():
        while True:
            try:
                i, j = q.get_nowait()
            except queue.Empty:
                return
            try:
                out[i] = fn(j)
            except BaseException as e:  # noqa: BLE001 - reported by the worker
                errors.append(e)
                return

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return out


def worker(spec: dict) -> dict:
    data = bodies(spec)
    crcs = [zlib.crc32(b) for b in data]
    client = CLIENTS[spec["client"]](spec)
    if spec["workload"] == "small":
        client.put("warm-up", data[0], crcs[0])  # connection, first-use costs: before the clock
        jobs = [(f"d{i % 100:02d}/f{i:06d}.dat", data[i], crcs[i]) for i in range(len(data))]
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        in_threads(spec["threads"], jobs, lambda j: client.put(*j))
        wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        extra = {}
    else:
        key = "big.bin"
        upload = client.create(key)
        client.part(key, upload, 1, data[0], crcs[0])  # warm-up: part 1, sent again in the run
        jobs = [(key, upload, n + 1, data[n], crcs[n]) for n in range(len(data))]
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        parts = in_threads(spec["threads"], jobs, lambda j: client.part(*j))
        wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        client.complete(key, upload, [(n + 1, e, c) for n, (e, c) in enumerate(parts)])
        extra = {"key": key}
    user, system = c1.ru_utime - c0.ru_utime, c1.ru_stime - c0.ru_stime
    return {"wall_s": wall, "user_s": user, "sys_s": system, "cpu_s": user + system, "requests": len(data), **extra}


# ---------------------------------------------------------------------------------------------- driver

def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_idle(pid: int, max_wait: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        c0 = proc_cpu(pid)
        time.sleep(1.0)
        if proc_cpu(pid) - c0 < 0.03:
            return


def check(s3, spec: dict, res: dict) -> str:
    """'' when the bucket holds what the run wrote, else what is wrong."""
    c = s3.client()
    got: dict[str, int] = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=spec["bucket"]):
        got.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    data = bodies(spec)
    rng = random.Random()
    if spec["workload"] == "small":
        want = {f"d{i % 100:02d}/f{i:06d}.dat": spec["size"] for i in range(spec["count"])}
        want["warm-up"] = spec["size"]
        if got != want:
            return f"{len(got)} objects, {len(want)} expected ({sum(got.get(k) == v for k, v in want.items())} right)"
        for i in rng.sample(range(spec["count"]), min(8, spec["count"])):
            if c.get_object(Bucket=spec["bucket"], Key=f"d{i % 100:02d}/f{i:06d}.dat")["Body"].read() != data[i]:
                return f"object {i} differs"
        return ""
    size = spec["count"] * spec["size"]
    if got != {res["key"]: size}:
        return f"bucket holds {got}, expected {{{res['key']!r}: {size}}}"
    for n in rng.sample(range(spec["count"]), min(3, spec["count"])):
        start = n * spec["size"] + rng.randrange(spec["size"] - MiB)
        r = c.get_object(Bucket=spec["bucket"], Key=res["key"], Range=f"bytes={start}-{start + MiB - 1}")
        off = start - n * spec["size"]
        if r["Body"].read() != data[n][off:off + MiB]:
            return f"part {n + 1} differs"
    return ""


def empty_and_delete(s3, bucket: str) -> None:
    c = s3.client()
    for up in c.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        c.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    c.delete_bucket(Bucket=bucket)


def run_one(s3, spec: dict, out_dir: str) -> dict:
    bucket = spec["bucket"]
    s3.create_bucket(bucket)
    c = s3.client()
    c.put_object(Bucket=bucket, Key="bench-probe", Body=b"x")
    c.delete_object(Bucket=bucket, Key="bench-probe")
    wait_idle(s3.proc.pid)
    env = {**os.environ, **s3.env(), "BOTO_DISABLE_CRT": "true"}
    for var in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_SESSION_TOKEN", "http_proxy", "HTTP_PROXY"):
        env.pop(var, None)
    s0 = proc_cpu(s3.proc.pid)
    name = f"{spec['workload']}-{spec['client']}-{spec['repeat']}"
    with open(os.path.join(out_dir, name + ".err"), "wb") as err:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                           env=env, stdout=subprocess.PIPE, stderr=err, timeout=spec["timeout"])
    server = proc_cpu(s3.proc.pid) - s0
    res = {"spec": spec, "rc": p.returncode, "server_cpu_s": server}
    if p.returncode == 0:
        res.update(json.loads(p.stdout.decode().strip().splitlines()[-1]))
        res["check"] = check(s3, spec, res)
    else:
        res["check"] = f"worker exited {p.returncode} (see {name}.err)"
    try:
        empty_and_delete(s3, bucket)
    except Exception as e:  # noqa: BLE001
        print(f"   could not delete {bucket}: {e}", flush=True)
    return res


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def span(xs: list[float], scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(med(xs) * scale)} ({fmt.format(min(xs) * scale)}–{fmt.format(max(xs) * scale)})"


def render(runs: list[dict], clients: list[str], workloads: list[str]) -> str:
    lines = ["| workload | client | wall s | req/s | MB/s | client CPU ms/req | server CPU ms/req | "
             "wall / project | client CPU / project | runs ok |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in workloads:
        base = None
        for cl in clients:
            ok = [r for r in runs if r["spec"]["workload"] == w and r["spec"]["client"] == cl
                  and r["rc"] == 0 and not r["check"]]
            n = len([r for r in runs if r["spec"]["workload"] == w and r["spec"]["client"] == cl])
            if not ok:
                lines.append(f"| {w} | {cl} | – | – | – | – | – | – | – | 0/{n} |")
                continue
            reqs = ok[0]["requests"]
            size = ok[0]["spec"]["size"]
            wall = [r["wall_s"] for r in ok]
            cpu = [r["cpu_s"] / reqs for r in ok]
            srv = [r["server_cpu_s"] / reqs for r in ok]
            row = {"wall": med(wall), "cpu": med(cpu)}
            if cl == "project":
                base = row
            ratio = (f"{row['wall'] / base['wall']:.2f}", f"{row['cpu'] / base['cpu']:.2f}") if base else ("–", "–")
            rate = reqs / med(wall)
            lines.append(f"| {w} | {cl} | {span(wall)} | {rate:,.0f} | {rate * size / 1e6:,.0f} "
                         f"| {span(cpu, 1000, '{:.3f}')} | {med(srv) * 1000:.3f} | {ratio[0]} | {ratio[1]} "
                         f"| {len(ok)}/{n} |")
    return "\n".join(lines)


def versions() -> str:
    import awscrt
    import botocore

    from pfsxport import __version__
    return f"pfsxport {__version__}, awscrt {awscrt.__version__}, botocore {botocore.__version__}, " \
           f"Python {sys.version.split()[0]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--small-size", type=int, default=4 * KiB)
    ap.add_argument("--parts", type=int, default=32)
    ap.add_argument("--part-size", type=int, default=16, help="MiB")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clients", default="project,crt,botocore")
    ap.add_argument("--workloads", default="small,parts,parts-unsigned")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default=None, help="directory for raw.json, table.md and the workers' stderr")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker))), flush=True)
        return 0
    if a.part_size < 5 and a.parts > 1:
        ap.error("--part-size: S3 takes parts of 5 MiB at least (but the last)")
    from pfsxport.localstore import SeaweedFS

    clients = a.clients.split(",")
    workloads = a.workloads.split(",")
    out = a.out or tempfile.mkdtemp(prefix="pfsxport-bench-crt-")
    os.makedirs(out, exist_ok=True)
    runs: list[dict] = []
    with SeaweedFS() as s3:  # in a temporary directory, removed at the end
        print(f"== SeaweedFS at {s3.endpoint} (pid {s3.proc.pid}); logs in {out}", flush=True)
        for rep in range(a.repeat):
            order = clients[rep % len(clients):] + clients[:rep % len(clients)]
            for w in workloads:
                for cl in order:
                    small = w == "small"
                    spec = {"client": cl, "workload": "small" if small else "parts", "repeat": rep,
                            "count": a.small if small else a.parts,
                            "size": a.small_size if small else a.part_size * MiB,
                            "signed": w != "parts-unsigned", "threads": a.threads, "endpoint": s3.endpoint,
                            "bucket": f"crt-{uuid.uuid4().hex[:10]}", "timeout": a.timeout}
                    r = run_one(s3, spec, out)
                    r["spec"]["workload"] = w
                    runs.append(r)
                    print(f"   {w:14s} {cl:9s} #{rep}: " + (
                        f"wall {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s server {r['server_cpu_s']:.2f}s "
                        f"{'ok' if not r['check'] else 'CHECK FAILED: ' + r['check']}" if r["rc"] == 0
                        else r["check"]), flush=True)
    table = render(runs, clients, workloads)
    head = (f"{a.small} x {a.small_size // KiB} KiB PUTs; {a.parts} x {a.part_size} MiB UploadParts; "
            f"{a.threads} threads per client; medians of {a.repeat} (min–max); {os.cpu_count()} cores shared "
            f"with the SeaweedFS server. {versions()}.")
    with open(os.path.join(out, "raw.json"), "w") as f:
        json.dump(runs, f, indent=1)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(head + "\n\n" + table + "\n")
    print("\n" + head + "\n\n" + table)
    return 0 if all(r["rc"] == 0 and not r["check"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
