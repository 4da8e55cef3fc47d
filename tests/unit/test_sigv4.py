"""The store's own SigV4 signatures against botocore's: every request the signed path sends
(S3Store.put_object, create_multipart, upload_part, complete_multipart, abort_multipart,
head_object, delete_object, head_bucket) is made at a fixed time, caught at the pool (the
send seam, nothing leaves the process), and held against two references:

- botocore's SigV4 signer (botocore.auth.S3SigV4Auth, the pure-Python one) on an AWSRequest
  with the URL botocore's own client builds for the same operation, the headers the store
  sends, its body, credentials, region and time: Authorization and the canonical request must
  be equal, so every header sent is signed, in canonical form, over the same URI, query and
  payload hash;
- the request botocore's client would send for the same call (caught before it is sent): same
  method, path, query, body, and the same headers apart from those of the SDK and the signature.

Path and virtual-host style, http and https, payload signed or UNSIGNED-PAYLOAD, with and
without a session token, and keys with characters that need encoding."""
from __future__ import annotations

import datetime
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import botocore.config
import botocore.credentials
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest

from pfsxport.config import S3Settings
from pfsxport.httpconn import Response
from pfsxport.store import S3Store, crc32_b64

ACCESS, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FQoGZXIvYXdzE//tok+en=="
REGION, BUCKET = "eu-west-3", "bkt"
WHEN = datetime.datetime(2024, 2, 29, 23, 59, 58, tzinfo=datetime.timezone.utc)
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# what botocore's client adds of its own, or the signature sets: not part of the request's shape
NOT_SHAPE = {"user-agent", "authorization", "amz-sdk-invocation-id", "amz-sdk-request", "expect", "content-length",
             "host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
# headers the store sends where botocore's client sends none (signed all the same)
ALSO_SENT = {"complete_multipart_upload": {"content-type": "application/xml"}}

KEY = "exports/dir one/f+1 ~%=&é.dat"
KEYS = [
    "plain",
    "a/b/c/nested.dat",
    "dir/",
    "with space",
    "two  spaces and trailing ",
    "plus+sign",
    "tilde~x",
    "percent%20literal%",
    "equals=and&amp",
    "question?hash#semi;colon:at@",
    "bang!star*quote'paren()comma,dollar$",
    "unicode/é/日本語/😀",
    "decomposed/e\u0301",
    "ctrl\tand\nnewline",
    "a//double/slash",
    "dot/./and/../dotdot",
    "/leading-slash",
    "-_.~ unreserved",
]

# the project's payload policy (README: hashed over http, not over https, unless told)
MODES = {
    "http": ("http://s3.test:9000", "auto", None, True),
    "https": ("https://s3.test", "auto", None, False),
    "http-never": ("http://s3.test:9000", "never", None, False),
    "https-always": ("https://s3.test", "always", None, True),
    "token": ("http://s3.test:9000", "auto", TOKEN, True),
}


class Caught(Exception):
    """Raised from botocore's before-send: the request it would have sent is kept."""


class Recorder:
    """The pool the signed requests go to: keeps them and answers as S3 does."""

    def __init__(self):
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Response:
        self.sent.append((method, target, dict(headers), body))
        data = b""
        if method == "POST" and target.endswith("?uploads="):
            data = b"<InitiateMultipartUploadResult><UploadId>up-1</UploadId></InitiateMultipartUploadResult>"
        elif method == "POST":
            data = b"<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>"
        return Response(200, {"etag": '"e"', "content-length": "0"}, data)


@dataclass
class Setup:
    store: S3Store
    sent: Recorder
    client: Any  # botocore's client for the same endpoint, style, credentials and policy
    caught: list
    endpoint: str
    sign_payload: bool
    token: str | None
    when: datetime.datetime = WHEN
    secret: str = SECRET


_clients: dict[tuple, tuple[Any, list]] = {}


def botocore_client(endpoint: str, style: str, token: str | None, sign_payload: bool):
    """botocore's client (cached), its requests caught before they are sent."""
    k = (endpoint, style, token, sign_payload)
    if k not in _clients:
        c = botocore.session.Session().create_client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
            aws_session_token=token,
            config=botocore.config.Config(s3={"addressing_style": style, "payload_signing_enabled": sign_payload},
                                          retries={"total_max_attempts": 1},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))
        caught: list = []

        def catch(request, **_):
            caught.append(request)
            raise Caught()

        c.meta.events.register("before-send.s3", catch)
        _clients[k] = (c, caught)
    return _clients[k]


@pytest.fixture
def setup(monkeypatch) -> Callable[..., Setup]:
    for var in PROXIES + ("AWS_PROFILE", "AWS_CREDENTIAL_EXPIRATION", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: WHEN)

    def make(mode: str = "http", style: str = "path", frozen: bool = True) -> Setup:
        endpoint, policy, token, sign_payload = MODES[mode]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        if token:
            monkeypatch.setenv("AWS_SESSION_TOKEN", token)
        else:
            monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        store = S3Store(BUCKET, S3Settings(endpoint_url=endpoint, region=REGION, addressing_style=style,
                                           sign_payload=policy))
        assert store.fast is not None, "these requests are not signed by the store"
        rec = Recorder()
        store.fast.pool = rec
        if frozen:
            store.fast.clock = WHEN.timetuple
        client, caught = botocore_client(endpoint, style, token, sign_payload)
        return Setup(store, rec, client, caught, endpoint, sign_payload, token)

    return make


class Reference(botocore.auth.S3SigV4Auth):
    """botocore's S3 signer, keeping the canonical request it signed."""

    canonical = ""

    def string_to_sign(self, request, canonical_request):
        self.canonical = canonical_request
        return super().string_to_sign(request, canonical_request)


def botocore_request(s: Setup, op: str, kw: dict) -> AWSRequest:
    """What botocore's client would send for this operation."""
    before = len(s.caught)
    with pytest.raises(Caught):
        getattr(s.client, op)(Bucket=BUCKET, **kw)
    assert len(s.caught) == before + 1
    return s.caught[-1]


def body_of(request) -> bytes:
    b = request.body
    if b is None:
        return b""
    return b.getvalue() if hasattr(b, "getvalue") else bytes(b)


def check(s: Setup, op: str, kw: dict, sent: tuple[str, str, dict[str, str], bytes], canonical: str) -> None:
    """The request the store sent is the one botocore's client would send, signed as botocore signs it."""
    method, target, headers, body = sent
    theirs = botocore_request(s, op, kw)
    url = urlsplit(theirs.url)
    path, _, query = target.partition("?")  # a request target, not a URL: "//k" is a path
    assert method == theirs.method
    assert headers["host"] == url.netloc
    assert path == url.path  # the key's encoding, byte for byte
    assert sorted(parse_qsl(query, keep_blank_values=True)) == \
        sorted(parse_qsl(url.query, keep_blank_values=True))
    assert body == body_of(theirs)
    shape = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in theirs.headers.items()}
    shape.update(ALSO_SENT.get(op, {}))
    # (a header's value as the server reads it: HTTP drops the white space around it)
    assert {k: v.strip() for k, v in headers.items() if k not in NOT_SHAPE} == \
        {k: v.strip() for k, v in shape.items() if k not in NOT_SHAPE and not k.startswith("x-amz-sdk-")}

    # botocore's signer on the same request: its URL (path and query as botocore encodes them),
    # every header the store sends but its signature, the body, the same credentials and time
    ref = AWSRequest(method=method, url=theirs.url, data=body,
                     headers={k: v for k, v in headers.items() if k != "authorization"})
    ref.context["client_config"] = botocore.config.Config(s3={"payload_signing_enabled": s.sign_payload})
    signer = Reference(botocore.credentials.Credentials(ACCESS, s.secret, s.token), "s3", REGION)
    signer.add_auth(ref)
    assert canonical == signer.canonical
    assert headers["authorization"] == ref.headers["Authorization"]
    assert headers["x-amz-content-sha256"] == ref.headers["X-Amz-Content-SHA256"]
    assert headers["x-amz-date"] == ref.headers["X-Amz-Date"] == s.when.strftime("%Y%m%dT%H%M%SZ")
    assert headers.get("x-amz-security-token") == s.token


def run(s: Setup, call: Callable[[S3Store], Any]) -> list[tuple[tuple, str]]:
    """The requests `call` makes through the signed path, each with its canonical request."""
    canonicals: list[str] = []
    sign = s.store.fast.sign

    def keep(*a, **kw):
        r = sign(*a, **kw)
        canonicals.append(r.canonical)
        return r

    s.store.fast.sign = keep
    try:
        call(s.store)
    finally:
        del s.store.fast.sign
    assert len(s.sent.sent) == len(canonicals)
    return list(zip(s.sent.sent, canonicals, strict=True))


META = {"file-permissions": "0100644", "file-owner": "1000", "file-group": "100",
        "file-atime": "1700000000123456789ns", "file-mtime": "1700000000123456789ns", "user-agent": "aws-fsx-lustre"}
BODY = b"some bytes\n" * 373
CRC = zlib.crc32(BODY)
PARTS = [(1, '"9b2cf535f27731c974343645a3985328"', crc32_b64(1)), (2, '"a&b<c>"', crc32_b64(0xFFFFFFFF))]


def with_checksum(store: S3Store, on: bool) -> S3Store:
    store.checksum = on
    return store


# (name, the store's call, botocore's operation and arguments for the same request)
SHAPES: list[tuple[str, Callable[[S3Store, str], Any], str, Callable[[str], dict]]] = [
    ("HeadBucket", lambda s, k: s.head_bucket(), "head_bucket", lambda k: {}),
    ("PutObject", lambda s, k: with_checksum(s, False).put_object(k, BODY, META, "application/octet-stream", CRC),
     "put_object", lambda k: dict(Key=k, Body=BODY, Metadata=META, ContentType="application/octet-stream")),
    ("PutObject+crc32", lambda s, k: with_checksum(s, True).put_object(k, BODY, META, "application/octet-stream", CRC),
     "put_object", lambda k: dict(Key=k, Body=BODY, Metadata=META, ContentType="application/octet-stream",
                                  ChecksumCRC32=crc32_b64(CRC))),
    ("PutObject no metadata", lambda s, k: s.put_object(k, b"a,b\n", None, "text/csv"),
     "put_object", lambda k: dict(Key=k, Body=b"a,b\n", ContentType="text/csv")),
    ("PutObject directory", lambda s, k: with_checksum(s, True).put_object(
        k + "/", b"", META, "application/x-directory", zlib.crc32(b"")),
     "put_object", lambda k: dict(Key=k + "/", Body=b"", Metadata=META, ContentType="application/x-directory",
                                  ChecksumCRC32=crc32_b64(0))),
    ("CreateMultipartUpload", lambda s, k: with_checksum(s, False).create_multipart(
        k, META, "application/octet-stream"),
     "create_multipart_upload", lambda k: dict(Key=k, Metadata=META, ContentType="application/octet-stream")),
    ("CreateMultipartUpload+crc32", lambda s, k: with_checksum(s, True).create_multipart(
        k, META, "application/octet-stream"),
     "create_multipart_upload", lambda k: dict(Key=k, Metadata=META, ContentType="application/octet-stream",
                                               ChecksumAlgorithm="CRC32")),
    ("UploadPart", lambda s, k: with_checksum(s, False).upload_part(k, "up~1+/=", 7, BODY, CRC),
     "upload_part", lambda k: dict(Key=k, UploadId="up~1+/=", PartNumber=7, Body=BODY)),
    ("UploadPart+crc32", lambda s, k: with_checksum(s, True).upload_part(k, "up~1+/=", 10000, BODY, CRC),
     "upload_part", lambda k: dict(Key=k, UploadId="up~1+/=", PartNumber=10000, Body=BODY,
                                   ChecksumCRC32=crc32_b64(CRC))),
    ("CompleteMultipartUpload", lambda s, k: with_checksum(s, False).complete_multipart(k, "up-1", PARTS),
     "complete_multipart_upload", lambda k: dict(Key=k, UploadId="up-1", MultipartUpload={
         "Parts": [{"PartNumber": n, "ETag": e} for n, e, _ in PARTS]})),
    ("CompleteMultipartUpload+crc32", lambda s, k: with_checksum(s, True).complete_multipart(k, "up-1", PARTS),
     "complete_multipart_upload", lambda k: dict(Key=k, UploadId="up-1", MultipartUpload={
         "Parts": [{"PartNumber": n, "ETag": e, "ChecksumCRC32": c} for n, e, c in PARTS]})),
    ("AbortMultipartUpload", lambda s, k: s.abort_multipart(k, "2~xyz.abc_DEF-0"),
     "abort_multipart_upload", lambda k: dict(Key=k, UploadId="2~xyz.abc_DEF-0")),
    ("HeadObject", lambda s, k: s.head_object(k), "head_object", lambda k: dict(Key=k)),
    ("DeleteObject", lambda s, k: s.delete_object(k), "delete_object", lambda k: dict(Key=k)),
    # not sent by the store (list_parts goes through botocore's client), but the signer is
    # generic: a GET with a query of several parameters
    ("ListParts", lambda s, k: s.fast.request("list_parts", "GET", k, query={
        "uploadId": "up/1", "part-number-marker": "2", "max-parts": "1000"}),
     "list_parts", lambda k: dict(Key=k, UploadId="up/1", PartNumberMarker=2, MaxParts=1000)),
]


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name, call, op, kw", SHAPES, ids=[s[0] for s in SHAPES])
def test_every_request_shape_is_signed_as_botocore_signs_it(setup, mode, style, name, call, op, kw):
    s = setup(mode, style)
    [(sent, canonical)] = run(s, lambda store: call(store, KEY))
    check(s, op, kw(KEY), sent, canonical)


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("name, call, op, kw", [s for s in SHAPES if s[0] in (
    "PutObject+crc32", "UploadPart", "HeadObject", "DeleteObject", "AbortMultipartUpload")],
    ids=["PutObject", "UploadPart", "Abort", "HeadObject", "DeleteObject"])
def test_keys_that_need_encoding(setup, style, key, name, call, op, kw):
    s = setup("http", style)
    [(sent, canonical)] = run(s, lambda store: call(store, key))
    check(s, op, kw(key), sent, canonical)


def test_the_signing_day_and_credentials_may_change_between_requests(setup, monkeypatch):
    """The derived signing key is kept per (secret, day): a new day, or keys rotated by the
    credential provider, are signed with a key of their own."""
    s = setup("token")
    frozen = s.store.fast.credentials.get_frozen_credentials()
    s.store.fast.credentials = botocore.credentials.Credentials(frozen.access_key, frozen.secret_key, frozen.token)
    kw = dict(Key=KEY, Body=BODY, Metadata=META, ContentType="application/octet-stream")
    for when, secret in [(WHEN, SECRET), (WHEN + datetime.timedelta(seconds=3), SECRET),
                         (WHEN + datetime.timedelta(seconds=3), "rotated/secret+1"), (WHEN, "rotated/secret+1")]:
        s.when, s.secret = when, secret
        s.store.fast.clock = when.timetuple
        s.store.fast.credentials.secret_key = secret
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda w=when: w)
        [(sent, canonical)] = run(s, lambda store: store.put_object(KEY, BODY, META, "application/octet-stream"))
        s.sent.sent.clear()
        check(s, "put_object", kw, sent, canonical)


@pytest.mark.parametrize("metadata", [
    {"note": "two  spaces"}, {"note": " padded "}, {"Mixed-Case": "v"}, {"file-owner": ""},
], ids=["runs-of-spaces", "padded", "mixed-case-name", "empty-value"])
def test_metadata_in_canonical_form(setup, metadata):
    s = setup("http")
    [(sent, canonical)] = run(s, lambda store: store.put_object(KEY, BODY, metadata, "application/octet-stream"))
    check(s, "put_object", dict(Key=KEY, Body=BODY, Metadata=metadata, ContentType="application/octet-stream"),
          sent, canonical)


def test_requests_are_signed_at_the_current_utc_time(setup):
    s = setup("http", frozen=False)
    s.store.delete_object(KEY)
    [(_, _, headers, _)] = s.sent.sent
    signed_at = datetime.datetime.strptime(headers["x-amz-date"] + "+0000", "%Y%m%dT%H%M%SZ%z")
    assert abs(signed_at - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=1)
    assert headers["authorization"].split("Credential=")[1].startswith(f"{ACCESS}/{headers['x-amz-date'][:8]}/")
