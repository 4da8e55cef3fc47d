"""The object store: an S3 client behind one choke point.

Owns botocore (the only module of the data path that imports it; boto3's resource layer is
not needed). Every request goes through `S3Store._retrying`, which retries throttling,
5xx, resets and timeouts with exponential backoff and full jitter (bounded attempts) and
translates errors into the project's StoreError tree (keeping __cause__), whether the
request went through the botocore client or was signed here (single PUTs, HEADs and
DELETEs: far less CPU per request). Local: no MPI here.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import random
import re
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, unquote_plus
from xml.sax.saxutils import escape, unescape

from . import httpconn
from .config import S3Settings
from .errors import AccessDenied, NoSuchBucket, NoSuchUpload, RetryableStoreError, StoreError, StoreUnreachable

log = logging.getLogger("pfsxport")

_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_RETRY_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "InternalError",
                "ServiceUnavailable", "RequestTimeTooSkewed", "OperationAborted", "TooManyRequests"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                 "AccountProblem", "InvalidToken", "ExpiredToken"}


def crc32_b64(crc: int) -> str:
    """S3's x-amz-checksum-crc32 wire form: base64 of the big-endian 4 bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def preload(settings: S3Settings) -> None:
    """Import what an S3Store for these settings needs at its start (botocore: ~0.15 s of
    CPU, unless the credentials come from the environment), e.g. while a rank waits."""
    if _env_credentials(settings) is None or not (settings.region or os.environ.get("AWS_DEFAULT_REGION")):
        import botocore.session  # noqa: F401


@dataclass(frozen=True, slots=True)
class _EnvCredentials:
    """Static keys from the environment, shaped like botocore's frozen credentials."""

    access_key: str
    secret_key: str
    token: str | None

    def get_frozen_credentials(self) -> _EnvCredentials:
        return self


def _env_credentials(settings: S3Settings) -> _EnvCredentials | None:
    """The credentials botocore's chain would take from the environment, without importing
    it: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) are first in that
    chain unless a profile is named explicitly. Keys with an expiry are left to botocore."""
    env = os.environ
    if settings.profile or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not (access and secret):
        return None
    return _EnvCredentials(access, secret, env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the store accepts, found by one probe per task on rank 0."""

    crc32: bool = False  # accepts x-amz-checksum-crc32 on PUT/UploadPart
    crc32_verified: bool = False  # rejects a wrong one (the checksum is really checked)
    dir_metadata: bool = True  # keeps user metadata on keys ending in '/'


@dataclass(frozen=True, slots=True)
class Listed:
    """One listed object: key, size, ETag and LastModified (ns since the epoch, 0 unknown)."""

    key: str
    size: int
    etag: str
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ListPage:
    objects: list[Listed]
    prefixes: list[str]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a GET answered: the ETag, the object's whole size, the bytes received, its user
    metadata (names without x-amz-meta-) and LastModified (ns since the epoch)."""

    etag: str
    size: int
    received: int
    metadata: dict[str, str]
    mtime_ns: int


def _epoch_ns(when: Any) -> int:
    if when is None or not hasattr(when, "timestamp"):
        return 0
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """What a HEAD tells of an object: its size, ETag, stored CRC32 (base64, "" if none;
    a multipart object's may end in -N) and checksum type, and its user metadata."""

    size: int
    etag: str
    crc32: str
    checksum_type: str
    metadata: dict[str, str]
    content_type: str


class S3Store:
    """One bucket on one endpoint. Thread-safe: one botocore client, a pooled connection set."""

    def __init__(self, bucket: str, settings: S3Settings, *, pool: int = 64):
        self.bucket = bucket
        self.settings = settings
        self.checksum = False  # set from the probe by the job
        self.pool = pool
        self._session = None
        self._client = None
        self._client_lock = threading.Lock()
        # botocore's order: the setting, AWS_DEFAULT_REGION, then the profile's config
        self.region = settings.region or os.environ.get("AWS_DEFAULT_REGION") or \
            self.session.get_config_variable("region") or "us-east-1"
        self._tls = threading.local()
        # Single PUTs, HEADs and DELETEs (most requests of an export, all of a no-change
        # one) skip botocore's per-request machinery: ~0.5 ms of client CPU per PUT instead
        # of ~1.7 ms, and no client to build (~0.5 s of start-up per rank).
        self.fast = _Signed.for_store(self)
        # The first NoSuchBucket any request met: objects written before may be gone with the
        # bucket, which the manifest must learn (Manifest.mark_lost). Read and reset by the owner.
        self.bucket_lost: str | None = None

    @property
    def session(self):
        """The botocore session, made on first use: a store whose credentials, region and
        endpoint all come from the environment or the settings never imports botocore
        unless it needs its client."""
        with self._client_lock:
            if self._session is None:
                import botocore.session  # not boto3: its import and resource models cost start-up time

                self._session = botocore.session.Session(profile=self.settings.profile)
            return self._session

    @property
    def client(self):
        """The botocore client, built on first use (multipart, listing, copy, ...)."""
        session = self.session
        with self._client_lock:
            if self._client is None:
                import botocore.config

                s = self.settings
                cfg = botocore.config.Config(
                    region_name=self.region,
                    # auto: botocore's own rule (hash the body over http, not over https with a
                    # checksum), which an explicit False would override everywhere
                    s3={"addressing_style": s.addressing_style,
                        "payload_signing_enabled": {"always": True, "never": False}.get(s.sign_payload)},
                    retries={"total_max_attempts": 1},  # retries are ours, in _retrying
                    max_pool_connections=self.pool,
                    connect_timeout=s.connect_timeout,
                    read_timeout=s.read_timeout,
                    tcp_keepalive=True,
                    # Recent botocore sends CRC trailers with aws-chunked bodies by default, which
                    # many S3-compatible stores reject; we send our own checksums explicitly.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                self._client = session.create_client("s3", endpoint_url=s.endpoint_url, config=cfg)
            return self._client

    def endpoint_url(self) -> str | None:
        """The endpoint botocore would use, when it can be told without building a client."""
        if self.settings.endpoint_url:
            return self.settings.endpoint_url
        if not os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
            for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
                if os.environ.get(var):
                    return os.environ[var]
            scoped = self.session.get_scoped_config()
            if "services" in scoped:
                return None  # per-service endpoints in ~/.aws/config: let botocore resolve them
            if scoped.get("endpoint_url"):
                return scoped["endpoint_url"]
        return f"https://s3.{self.region}.amazonaws.com"

    # ---- the choke point ------------------------------------------------------------------

    def take_retries(self) -> int:
        """Retries this thread made since the last call; resets the count."""
        n = getattr(self._tls, "retries", 0)
        self._tls.retries = 0
        return n

    def _call(self, op: str, **kw: Any) -> Any:
        """A boto3 operation on this bucket, through the retry loop."""
        return self._retrying(op, kw.get("Key", ""), lambda: getattr(self.client, op)(Bucket=self.bucket, **kw),
                              kw.get("Body"))

    def _retrying(self, op: str, key: str, request, body: Any = None) -> Any:
        """The one choke point: every request to the store runs here. Throttling, 5xx,
        resets and timeouts are retried with exponential backoff and full jitter, at most
        s3.max_attempts times in all; errors come out as the StoreError tree."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                if attempt > 1 and hasattr(body, "seek"):
                    body.seek(0)
                return request()
            except StoreError as e:  # the signed fast path classifies its own answers
                err = e
            except OSError as e:
                err = _translate_transport_error(op, e)
            except Exception as e:
                err = _translate_library_error(op, key, e)
            if isinstance(err, NoSuchBucket) and self.bucket_lost is None:
                self.bucket_lost = str(err)
            if not err.retryable or attempt == attempts:
                if err.retryable:  # retries exhausted: the final form of the error
                    cause = err.__cause__
                    err = (StoreUnreachable if _unreachable(cause) else StoreError)(
                        f"{err} (after {attempts} attempts)", s3_code=err.s3_code, status=err.status,
                        retries=attempt - 1)
                    err.__cause__ = cause
                raise err
            self._tls.retries = getattr(self._tls, "retries", 0) + 1
            time.sleep(random.uniform(0, min(10.0, 0.05 * 2 ** attempt)))
        raise AssertionError("unreachable")

    # ---- operations -----------------------------------------------------------------------

    def head_bucket(self) -> None:
        if self.fast is not None:
            self._retrying("head_bucket", "", lambda: self.fast.request("head_bucket", "HEAD", None))
        else:
            self._call("head_bucket")

    def put_object(self, key: str, body: Any, metadata: dict[str, str] | None, content_type: str,
                   crc: int | None = None) -> str:
        if self.fast is not None and isinstance(body, bytes):
            headers = _object_headers(metadata, content_type)
            if crc is not None and self.checksum:
                headers["x-amz-checksum-crc32"] = crc32_b64(crc)
            return self._retrying("put_object", key, lambda: self.fast.request(
                "put_object", "PUT", key, body, headers).headers.get("etag", ""))
        kw: dict[str, Any] = {"Key": key, "Body": body, "ContentType": content_type}
        if metadata is not None:
            kw["Metadata"] = metadata
        if crc is not None and self.checksum:
            kw["ChecksumCRC32"] = crc32_b64(crc)
        return self._call("put_object", **kw).get("ETag", "")

    def create_multipart(self, key: str, metadata: dict[str, str], content_type: str) -> str:
        started = time.time()
        retries_before = getattr(self._tls, "retries", 0)
        if self.fast is not None:
            headers = _object_headers(metadata, content_type)
            if self.checksum:
                headers["x-amz-checksum-algorithm"] = "CRC32"
            upload_id = self._retrying("create_multipart_upload", key, lambda: self.fast.answer_field(
                "create_multipart_upload", "POST", key, "UploadId", headers=headers, query={"uploads": ""}))
        else:
            kw: dict[str, Any] = {"Key": key, "Metadata": metadata, "ContentType": content_type}
            if self.checksum:
                kw["ChecksumAlgorithm"] = "CRC32"
            upload_id = self._call("create_multipart_upload", **kw)["UploadId"]
        if getattr(self._tls, "retries", 0) > retries_before:
            self._abort_lost_creates(key, upload_id, started)
        return upload_id

    def _abort_lost_creates(self, key: str, upload_id: str, started: float) -> None:
        """A create whose answer was lost and then retried leaves an upload that nobody
        knows the id of: abort the uploads of this exact key that began during our call."""
        try:
            r = self._call("list_multipart_uploads", Prefix=key)
            for u in r.get("Uploads", []):
                initiated = u.get("Initiated")
                if u["Key"] == key and u["UploadId"] != upload_id and initiated is not None \
                        and started - 60 <= initiated.timestamp() <= time.time() + 60:
                    log.info("aborting upload %s of %s: its create was retried", u["UploadId"], key)
                    self.abort_multipart(key, u["UploadId"])
        except StoreError as err:
            log.warning("could not look for lost uploads of %s: %s", key, err)

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes, crc: int) -> tuple[str, str]:
        sent = crc32_b64(crc) if self.checksum else ""
        if self.fast is not None:
            headers = {"x-amz-checksum-crc32": sent} if sent else {}
            query = {"partNumber": str(number), "uploadId": upload_id}
            r = self._retrying("upload_part", key, lambda: self.fast.request(
                "upload_part", "PUT", key, body, headers, query))
            return r.headers.get("etag", ""), r.headers.get("x-amz-checksum-crc32", "") or sent
        kw: dict[str, Any] = {"Key": key, "UploadId": upload_id, "PartNumber": number, "Body": body}
        if sent:
            kw["ChecksumCRC32"] = sent
        r = self._call("upload_part", **kw)
        return r["ETag"], r.get("ChecksumCRC32", "") or sent

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str, str]]) -> None:
        if self.fast is not None:
            body = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag>"
                + (f"<ChecksumCRC32>{escape(crc)}</ChecksumCRC32>" if self.checksum and crc else "") + "</Part>"
                for n, etag, crc in parts)
            body = f'<CompleteMultipartUpload xmlns="{_S3_NS}">{body}</CompleteMultipartUpload>'.encode()
            self._retrying("complete_multipart_upload", key, lambda: self.fast.answer_field(
                "complete_multipart_upload", "POST", key, None, body, {"content-type": "application/xml"},
                {"uploadId": upload_id}))
            return
        spec = []
        for number, etag, crc in parts:
            p = {"PartNumber": number, "ETag": etag}
            if self.checksum and crc:
                p["ChecksumCRC32"] = crc
            spec.append(p)
        self._call("complete_multipart_upload", Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": spec})

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            if self.fast is not None:
                self._retrying("abort_multipart_upload", key, lambda: self.fast.request(
                    "abort_multipart_upload", "DELETE", key, query={"uploadId": upload_id}))
            else:
                self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except NoSuchUpload:
            pass

    def copy_object(self, source_key: str, key: str, metadata: dict[str, str], content_type: str) -> None:
        """Server-side copy within the bucket, with this object's own metadata."""
        self._call("copy_object", Key=key, CopySource={"Bucket": self.bucket, "Key": source_key},
                   MetadataDirective="REPLACE", Metadata=metadata, ContentType=content_type)

    def list_parts(self, key: str, upload_id: str) -> dict[int, str]:
        """{part number: ETag} the store holds for an open upload."""
        out: dict[int, str] = {}
        kw: dict[str, Any] = {"Key": key, "UploadId": upload_id}
        while True:
            r = self._call("list_parts", **kw)
            out.update({p["PartNumber"]: p["ETag"] for p in r.get("Parts", [])})
            if not r.get("IsTruncated"):
                return out
            kw["PartNumberMarker"] = r["NextPartNumberMarker"]

    def list_objects(self, prefix: str) -> Iterator[list[tuple[str, int]]]:
        """(key, size) of every object under `prefix`, a page (up to 1000) at a time."""
        kw: dict[str, Any] = {"Prefix": prefix}
        while True:
            r = self._call("list_objects_v2", **kw)
            yield [(o["Key"], o["Size"]) for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return
            kw["ContinuationToken"] = r["NextContinuationToken"]

    def list_page(self, prefix: str, delimiter: str = "", token: str | None = None) -> ListPage:
        """One ListObjectsV2 page (up to 1000 keys) under `prefix`; with a delimiter, the common
        prefixes too. `token` is the previous page's `next_token`."""
        kw: dict[str, Any] = {"Prefix": prefix}
        if delimiter:
            kw["Delimiter"] = delimiter
        if token:
            kw["ContinuationToken"] = token
        r = self._call("list_objects_v2", **kw)
        objects = [Listed(o["Key"], o["Size"], o.get("ETag", ""), _epoch_ns(o.get("LastModified")))
                   for o in r.get("Contents", [])]
        return ListPage(objects, [p["Prefix"] for p in r.get("CommonPrefixes", [])],
                        r.get("NextContinuationToken") if r.get("IsTruncated") else None)

    def get_object(self, key: str, sink, start: int = 0, end: int | None = None, if_match: str = "",
                   chunk: int = 1 << 20) -> Fetched:
        """GET `key` (bytes start..end inclusive when `end` is given), the body streamed to
        sink(offset, data) a chunk at a time, so memory holds one chunk. A retried request
        streams again from `start` (sink writes must be idempotent: pwrite). `if_match`: the
        ETag the object must still have (412 PreconditionFailed otherwise)."""
        kw: dict[str, Any] = {"Key": key}
        if end is not None:
            kw["Range"] = f"bytes={start}-{end}"
        if if_match:
            kw["IfMatch"] = if_match

        def request() -> Fetched:
            r = self.client.get_object(Bucket=self.bucket, **kw)
            body, at = r["Body"], start
            try:
                while True:
                    data = body.read(chunk)
                    if not data:
                        break
                    sink(at, data)
                    at += len(data)
            finally:
                body.close()
            total = int(r.get("ContentRange", "").rpartition("/")[2] or r.get("ContentLength", at - start))
            return Fetched(r.get("ETag", ""), total, at - start, dict(r.get("Metadata", {})),
                           _epoch_ns(r.get("LastModified")))
        return self._retrying("get_object", key, request)

    def delete_objects(self, keys: list[str]) -> dict[str, str]:
        """Delete up to 1000 keys in one request; returns {key: error} for those that failed."""
        if not keys:
            return {}
        r = self._call("delete_objects", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        return {e["Key"]: f"{e.get('Code', '')} {e.get('Message', '')}".strip() for e in r.get("Errors", [])}

    def head_object(self, key: str) -> dict[str, Any]:
        """ContentLength, ContentType and Metadata (the user metadata, prefix removed)."""
        if self.fast is None:
            return self._call("head_object", Key=key)
        r = self._retrying("head_object", key, lambda: self.fast.request("head_object", "HEAD", key))
        return {"ContentLength": int(r.headers.get("content-length", 0)), "ContentType": r.headers.get("content-type"),
                "ETag": r.headers.get("etag", ""),
                "Metadata": {k[11:]: v for k, v in r.headers.items() if k.startswith("x-amz-meta-")}}

    # ---- reading back (verify) ----------------------------------------------------------

    def head_checked(self, key: str, part: int | None = None) -> ObjectHead:
        """HEAD with x-amz-checksum-mode ENABLED (the stored CRC32, where the store keeps
        one), of the object or of one part of a multipart object (its ContentLength is that
        part's). A key that is not there raises StoreError with status 404."""
        if self.fast is None:
            kw: dict[str, Any] = {"Key": key, "ChecksumMode": "ENABLED"}
            if part:
                kw["PartNumber"] = part
            r = self._call("head_object", **kw)
            return ObjectHead(int(r.get("ContentLength", 0)), r.get("ETag", ""), r.get("ChecksumCRC32", "") or "",
                              r.get("ChecksumType", "") or "", r.get("Metadata", {}), r.get("ContentType", "") or "")
        query = {"partNumber": str(part)} if part else None
        h = self._retrying("head_object", key, lambda: self.fast.request(
            "head_object", "HEAD", key, b"", {"x-amz-checksum-mode": "ENABLED"}, query)).headers
        return ObjectHead(int(h.get("content-length", 0)), h.get("etag", ""), h.get("x-amz-checksum-crc32", ""),
                          h.get("x-amz-checksum-type", ""),
                          {k[11:]: v for k, v in h.items() if k.startswith("x-amz-meta-")}, h.get("content-type", ""))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of an object (fewer at its end)."""
        rng = f"bytes={offset}-{offset + length - 1}"
        if self.fast is None:
            return self._call("get_object", Key=key, Range=rng)["Body"].read()
        return self._retrying("get_object", key, lambda: self.fast.request(
            "get_object", "GET", key, b"", {"range": rng})).data

    def list_dir(self, prefix: str) -> tuple[dict[str, int], list[str]]:
        """One level under `prefix` (delimiter '/'): {key: size} of the objects there, the
        key equal to `prefix` included, and the common prefixes below it."""
        objects: dict[str, int] = {}
        prefixes: list[str] = []
        if self.fast is not None:  # botocore's parsing of a listing costs ~70 us of CPU per key
            query = {"list-type": "2", "prefix": prefix, "delimiter": "/", "encoding-type": "url"}
            while True:
                text = self._retrying("list_objects_v2", prefix, lambda: self.fast.request(
                    "list_objects_v2", "GET", None, b"", None, dict(query))).data.decode("utf-8", "replace")
                for block in _CONTENTS.findall(text):
                    objects[_url_field(block, "Key")] = int(_xml_field(block, "Size") or 0)
                prefixes += [unquote_plus(unescape(p)) for p in _COMMON.findall(text)]
                token = _xml_field(text, "NextContinuationToken")
                if _xml_field(text, "IsTruncated") != "true" or not token:
                    return objects, prefixes
                query["continuation-token"] = token
        kw: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/"}
        while True:
            r = self._call("list_objects_v2", **kw)
            objects.update((o["Key"], o["Size"]) for o in r.get("Contents", []))
            prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            if not r.get("IsTruncated"):
                return objects, prefixes
            kw["ContinuationToken"] = r["NextContinuationToken"]

    def delete_object(self, key: str) -> None:
        if self.fast is not None:
            self._retrying("delete_object", key, lambda: self.fast.request("delete_object", "DELETE", key))
        else:
            self._call("delete_object", Key=key)

    # ---- probing --------------------------------------------------------------------------

    def check_writable(self, prefix: str) -> None:
        """Write and remove one small object under `prefix`; raises StoreError when it cannot."""
        key = f"{prefix}.pfsxport-probe-{uuid.uuid4().hex[:12]}"
        self.put_object(key, b"pfsxport probe\n", None, "application/octet-stream")
        self.delete_object(key)

    def probe(self, scratch_prefix: str, want_checksum: str) -> Capabilities:
        """Check the bucket is reachable and writable, and what the store keeps and checks.

        Writes and removes two small objects under `scratch_prefix`. Raises StoreError
        subclasses (NoSuchBucket, AccessDenied, StoreUnreachable) when it cannot write."""
        self.head_bucket()
        base = f"{scratch_prefix}.pfsxport-probe-{uuid.uuid4().hex[:12]}"
        body = b"pfsxport probe\n"
        crc = zlib.crc32(body)
        crc32 = crc32_verified = False
        self.put_object(base, body, None, "application/octet-stream")
        try:
            if want_checksum != "none":
                self.checksum, saved = True, self.checksum  # send the header whatever was decided
                try:
                    try:
                        self.put_object(base, body, None, "application/octet-stream", crc)
                        crc32 = True
                    except StoreError as e:
                        if isinstance(e, (AccessDenied, StoreUnreachable)) or want_checksum == "crc32":
                            raise
                    if crc32:
                        try:
                            self.put_object(base, body, None, "application/octet-stream", crc ^ 1)
                        except StoreError as e:
                            crc32_verified = e.status == 400
                finally:
                    self.checksum = saved
            meta = {"pfsxport-probe": "1"}
            self.put_object(base + "-dir/", b"", meta, "application/x-directory")
            try:
                kept = self.head_object(base + "-dir/").get("Metadata", {}).get("pfsxport-probe") == "1"
            finally:
                self.delete_object(base + "-dir/")
        finally:
            self.delete_object(base)
        return Capabilities(crc32, crc32_verified, kept)


def _unreachable(cause: BaseException | None) -> bool:
    """Whether a transport error means no connection could be made at all."""
    if isinstance(cause, (ConnectionRefusedError, httpconn.ConnectFailed)):
        return True
    if "botocore" not in sys.modules:  # nothing of botocore's can have been raised
        return False
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    return isinstance(cause, (EndpointConnectionError, ConnectTimeoutError))


def _untrusted(e: BaseException) -> bool:
    """Whether a transport error is a failed certificate check (ours or botocore's)."""
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(e, ssl.SSLCertVerificationError):
        return True
    if "botocore" in sys.modules:
        from botocore.exceptions import SSLError

        return isinstance(e, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(e)
    return False


def _translate_library_error(op: str, key: str, e: Exception) -> StoreError:
    """botocore's (and urllib3's) errors as the StoreError tree; anything else is raised
    again. Imports botocore only if it is loaded already: a task that never needed its
    client has no botocore error to translate."""
    if "botocore" in sys.modules:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(e, ClientError):
            return _translate_client_error(op, key, e)
        if isinstance(e, BotoCoreError):
            return _translate_transport_error(op, e)
    if "urllib3" in sys.modules:
        from urllib3.exceptions import HTTPError

        if isinstance(e, HTTPError):
            return _translate_transport_error(op, e)
    raise e


def _translate_client_error(op: str, key: str, e: Any) -> StoreError:
    err = e.response.get("Error", {})
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    out = _classify(op, key, str(err.get("Code", "")), status, str(err.get("Message", "")))
    out.__cause__ = e
    return out


def _classify(op: str, key: str, code: str, status: int, message: str) -> StoreError:
    where = f" for key {key!r}" if key else ""
    msg = f"{op}{where}: {code or status} {message}".strip()
    cls: type[StoreError]
    if status == 403 or code in _DENIED_CODES:
        cls = AccessDenied
    elif code == "NoSuchBucket":
        cls = NoSuchBucket
    elif code == "NoSuchUpload":
        cls = NoSuchUpload
    elif status >= 500 or status == 429 or code in _RETRY_CODES:
        cls = RetryableStoreError
    else:
        cls = StoreError
    return cls(msg, s3_code=code, status=status)


def _no_tls(e: BaseException) -> bool:
    """Whether a TLS handshake failed because the other end does not speak TLS (https to an
    http port): as permanent as an untrusted certificate."""
    ssl = sys.modules.get("ssl")
    text = str(e).upper()
    return ssl is not None and isinstance(e, ssl.SSLError) and (
        "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "HTTP_REQUEST" in text)


def _translate_transport_error(op: str, e: Exception) -> StoreError:
    if _untrusted(e):  # permanent: retrying cannot make the certificate trusted
        why = getattr(e, "verify_message", None) or e
        out = StoreError(f"{op}: the endpoint's TLS certificate is not trusted ({why}); a private CA's "
                         "certificate goes in AWS_CA_BUNDLE")
        out.__cause__ = e
        return out
    if _no_tls(e):
        out = StoreError(f"{op}: the endpoint does not speak TLS ({e}); is it an http:// endpoint?")
        out.__cause__ = e
        return out
    transient: tuple[type, ...] = (OSError,)  # resets, timeouts, refused connections, ...
    if "botocore" in sys.modules:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        transient += (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError,
                      ResponseStreamingError, BotoConnectionError)
    if "urllib3" in sys.modules:
        from urllib3.exceptions import HTTPError

        transient += (HTTPError,)
    cls = RetryableStoreError if isinstance(e, transient) else StoreError
    out = cls(f"{op}: {e}")
    out.__cause__ = e
    return out


class SignedRequest(NamedTuple):
    """A request signed by _Signed.sign: the target (path and query) and the headers to send,
    with the canonical request whose hash was signed."""

    target: str
    headers: dict[str, str]
    canonical: str


class _Signed:
    """Requests signed here (AWS Signature V4) and sent on an httpconn pool: PutObject, the
    multipart steps (create, part, complete, abort), HeadBucket, HeadObject, DeleteObject;
    botocore keeps the listings, copies and batch deletes. The body's SHA-256 goes into the
    signature per s3.sign_payload: by default over http only, as botocore does (over https
    TLS protects the body); a store that verifies CRC32 checks the one sent with it.

    Used only where it behaves exactly like the botocore path: the credentials botocore's
    chain gives (the environment's keys, or the session's, refreshed per request), the
    same endpoint and region, no proxy in the
    environment. Path-style URLs unless virtual-host style is asked for or the endpoint is
    AWS's own (as botocore does with 'auto')."""

    def __init__(self, pool, prefix: str, host: str, credentials, region: str, sign_payload: bool = True):
        self.pool = pool  # sends: anything with httpconn.Pool's request()
        self.prefix = prefix  # "/bucket/" (path style) or "/" (virtual host)
        self.host = host
        self.credentials = credentials
        self.region = region
        self.sign_payload = sign_payload  # else UNSIGNED-PAYLOAD: the body is not hashed at either end
        self.clock = time.gmtime  # the signing time (UTC), a seam for the signature tests
        self._keys: dict[tuple[str, str], bytes] = {}

    @classmethod
    def for_store(cls, store: S3Store) -> _Signed | None:
        import urllib.parse
        import urllib.request

        url = store.endpoint_url()
        creds = _env_credentials(store.settings) or store.session.get_credentials()
        if url is None or creds is None:
            return None
        endpoint = urllib.parse.urlsplit(url)
        if endpoint.scheme not in ("http", "https") or endpoint.path not in ("", "/") or (
                urllib.request.getproxies().get(endpoint.scheme)
                and not urllib.request.proxy_bypass(endpoint.hostname or "")):
            return None
        settings, bucket = store.settings, store.bucket
        aws = (endpoint.hostname or "").endswith(".amazonaws.com")
        virtual = settings.addressing_style == "virtual" or (
            settings.addressing_style == "auto" and aws and "." not in bucket)
        host = f"{bucket}.{endpoint.netloc}" if virtual else endpoint.netloc
        hostname = f"{bucket}.{endpoint.hostname}" if virtual else endpoint.hostname
        tls = None
        if endpoint.scheme == "https":
            import ssl

            from botocore.httpsession import get_cert_path

            tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True))
        p = httpconn.Pool(hostname, endpoint.port or (443 if tls else 80), tls=tls, maxsize=store.pool,
                          connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout)
        sign = settings.sign_payload == "always" or (settings.sign_payload == "auto" and tls is None)
        return cls(p, "/" if virtual else f"/{bucket}/", host, creds, store.region, sign)

    def _signing_key(self, secret: str, date: str) -> bytes:
        k = self._keys.get((secret, date))
        if k is None:
            k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, date): k}
        return k

    def sign(self, method: str, key: str | None, body: bytes = b"", headers: dict[str, str] | None = None,
             query: dict[str, str] | None = None) -> SignedRequest:
        """The request on the bucket (key None) or an object, signed at self.clock(): its
        target and every header to send but Content-Length (the pool adds it, unsigned).
        Header names are sent in lower case; values are signed as SigV4 reads them (trimmed,
        each run of white space one space)."""
        creds = self.credentials.get_frozen_credentials()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", self.clock())
        payload = hashlib.sha256(body).hexdigest() if self.sign_payload else "UNSIGNED-PAYLOAD"
        uri = self.prefix + quote(key.encode("utf-8"), safe="/~") if key is not None else \
            (self.prefix.rstrip("/") or "/")
        h = {"host": self.host, "x-amz-date": amz_date, "x-amz-content-sha256": payload}
        if headers:
            h.update({k.lower(): v for k, v in headers.items()})  # canonical names are lower case
        if creds.token:
            h["x-amz-security-token"] = creds.token
        names = sorted(h)
        q = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())) \
            if query else ""
        values = "".join([f"{n}:{' '.join(h[n].split())}\n" for n in names])
        canonical = "\n".join((method, uri, q, values, ";".join(names), payload))
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        sig = hmac.new(self._signing_key(creds.secret_key, amz_date[:8]), to_sign.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                              f"SignedHeaders={';'.join(names)}, Signature={sig}")
        return SignedRequest(f"{uri}?{q}" if q else uri, h, canonical)

    def request(self, op: str, method: str, key: str | None, body: bytes = b"",
                headers: dict[str, str] | None = None, query: dict[str, str] | None = None):
        """One signed request (see sign()) sent on the pool; raises the StoreError tree for
        any answer but 2xx."""
        target, h, _ = self.sign(method, key, body, headers, query)
        r = self.pool.request(method, target, h, body)
        if 200 <= r.status < 300:
            return r
        text = r.data.decode("utf-8", "replace")
        missing = "NoSuchBucket" if key is None else "NoSuchUpload" if query and "uploadId" in query else "NoSuchKey"
        code = _xml_field(text, "Code") or {403: "AccessDenied", 404: missing, 503: "SlowDown"}.get(r.status, "")
        message = _xml_field(text, "Message")
        if "<Error>" not in text and not any(h.startswith(("x-amz", "x-goog")) for h in r.headers):
            message += (" (the endpoint's answer is not an S3 store's: no S3 error document and no x-amz "
                        "headers; is the endpoint URL right?)")
        raise _classify(op, key or "", code, r.status, message.strip())

    def answer_field(self, op: str, method: str, key: str, name: str | None, body: bytes = b"",
                     headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> str:
        """request(), then one field of the answer's XML (none: only the check). An <Error>
        in a 2xx answer (S3 may send one with 200 to CompleteMultipartUpload) raises by its
        code, as any other error answer."""
        r = self.request(op, method, key, body, headers, query)
        text = r.data.decode("utf-8", "replace")
        if "<Error>" in text:
            raise _classify(op, key, _xml_field(text, "Code"), r.status, _xml_field(text, "Message"))
        if name is None:
            return ""
        value = _xml_field(text, name)
        if not value:
            raise RetryableStoreError(f"{op} for key {key!r}: no {name} in the answer: {text[:200]!r}")
        return value


def _object_headers(metadata: dict[str, str] | None, content_type: str) -> dict[str, str]:
    headers = {"content-type": content_type}
    if metadata:
        headers.update({"x-amz-meta-" + k: v for k, v in metadata.items()})
    return headers


_CONTENTS = re.compile(r"<Contents>(.*?)</Contents>", re.S)
_COMMON = re.compile(r"<CommonPrefixes>\s*<Prefix>(.*?)</Prefix>", re.S)


def _url_field(text: str, name: str) -> str:
    """A field of a listing asked for with encoding-type=url (keys with any character)."""
    return unquote_plus(_xml_field(text, name))


def _xml_field(text: str, name: str) -> str:
    m = re.search(f"<{name}>(.*?)</{name}>", text, re.S)
    return unescape(m.group(1)) if m else ""
