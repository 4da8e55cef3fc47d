"""A real SeaweedFS accepts every request the store signs itself, for keys whose characters
need encoding (an export of such names goes through the same calls): single PUT with and
without CRC32, HEAD, DELETE, HEAD of the bucket, and a whole multipart upload (create, parts,
complete; abort of another). What lands in the bucket is checked with botocore's client."""
from __future__ import annotations

import zlib

import pytest

from pfsxport.config import S3Settings
from pfsxport.store import S3Store

KEYS = ["plus+sign", "percent%41literal%", "with space", "tilde~eq=amp&", "unicode/é/日本語/😀",
        "semi;colon:at@bang!star*quote'paren()comma,dollar$", "nested/a/b/c.dat"]
META = {"file-permissions": "0100644", "file-owner": "1000", "file-mtime": "1700000000123456789ns"}


@pytest.fixture
def store(seaweed, monkeypatch):
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = S3Store(seaweed.new_bucket(), S3Settings(endpoint_url=seaweed.endpoint, addressing_style="path"))
    assert s.fast is not None  # these requests are signed by the store, not by botocore
    s.checksum = s.probe("", "auto").crc32
    return s


def test_single_puts_heads_and_deletes_of_keys_that_need_encoding(seaweed, store):
    c = seaweed.client()
    store.head_bucket()
    for i, key in enumerate(KEYS):
        body = key.encode() * 3
        store.put_object(key, body, META, "application/octet-stream", zlib.crc32(body) if i % 2 else None)
        head = store.head_object(key)
        assert (head["ContentLength"], head["Metadata"]) == (len(body), META)
        assert c.get_object(Bucket=store.bucket, Key=key)["Body"].read() == body
    listed = {o["Key"] for o in c.list_objects_v2(Bucket=store.bucket).get("Contents", [])}
    assert listed == set(KEYS)
    for key in KEYS:
        store.delete_object(key)
    assert c.list_objects_v2(Bucket=store.bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize("key", ["plus+and%25 space/é~=&.bin"])
def test_a_multipart_upload_of_a_key_that_needs_encoding(seaweed, store, key):
    c = seaweed.client()
    parts = [bytes([n]) * (5 << 20) for n in (1, 2)] + [b"tail"]
    upload = store.create_multipart(key, META, "application/octet-stream")
    done = []
    for n, data in enumerate(parts, 1):
        etag, crc = store.upload_part(key, upload, n, data, zlib.crc32(data))
        done.append((n, etag, crc))
    assert sorted(store.list_parts(key, upload)) == [1, 2, 3]
    store.complete_multipart(key, upload, done)
    got = c.get_object(Bucket=store.bucket, Key=key)
    assert got["Body"].read() == b"".join(parts) and got["Metadata"] == META

    other = store.create_multipart(key + "+2", META, "application/octet-stream")
    store.upload_part(key + "+2", other, 1, b"x", zlib.crc32(b"x"))
    store.abort_multipart(key + "+2", other)
    assert not c.list_multipart_uploads(Bucket=store.bucket).get("Uploads")
    assert [o["Key"] for o in c.list_objects_v2(Bucket=store.bucket)["Contents"]] == [key]


@pytest.mark.parametrize("sign, signed", [("auto", True), ("always", True), ("never", False)])
def test_botocore_requests_hash_the_body_as_sign_payload_says(seaweed, monkeypatch, sign, signed):
    """When botocore sends the data (credentials from a profile or a process, which the
    store's own signer does not handle), `auto` over http still hashes each body into its
    signature, as it does with the store's own signer."""
    import hashlib

    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    s = S3Store(seaweed.new_bucket(), S3Settings(endpoint_url=seaweed.endpoint, addressing_style="path",
                                                 sign_payload=sign))
    s.fast = None  # the path of credentials the store's signer cannot use
    sent: list[str] = []
    s.client.meta.events.register("before-send.s3.PutObject",
                                  lambda request, **_: sent.append(request.headers["x-amz-content-sha256"]))
    body = b"payload " * 100
    s.put_object("k", body, META, "application/octet-stream")
    want = hashlib.sha256(body).hexdigest() if signed else "UNSIGNED-PAYLOAD"
    got = sent[0].decode() if isinstance(sent[0], bytes) else sent[0]
    assert got == want
    assert seaweed.client().get_object(Bucket=s.bucket, Key="k")["Body"].read() == body
