"""An HTTPS endpoint whose certificate comes from a private CA: trusted through
AWS_CA_BUNDLE, the export (single PUTs and parts on pfsxport's own client, the other
multipart steps on botocore's) completes whole; untrusted, the task fails at once with a
message that says what to do, and the refused handshake is not retried. Bodies are hashed
into the signature over http, not over https, as s3.sign_payload says. The TLS end is the
project's proxy (tests/faultproxy.py, no faults) in front of SeaweedFS."""
from __future__ import annotations

import pytest
from conftest import describe, task_id_of
from faultproxy import FaultProxy, is_put
from test_faults import export, make_tree, open_uploads
from tlscert import make_certs
from treeutil import assert_bucket_matches_tree


@pytest.mark.timeout(120)
def test_an_https_endpoint_signed_by_a_private_ca(seaweed, tmp_path):
    certs = make_certs(tmp_path / "tls")
    root = make_tree(tmp_path / "fs", small=40, dirs=2, big=1, parts=2)
    bucket = seaweed.new_bucket()
    with FaultProxy(seaweed.endpoint, tls=certs.server_context()) as proxy:
        assert proxy.url.startswith("https://")
        refused = export(seaweed, proxy, root, bucket, tmp_path / "st1")
        handshakes_refused = proxy.counts["tls_failed"]
        ok = export(seaweed, proxy, root, bucket, tmp_path / "st2", env={"AWS_CA_BUNDLE": str(certs.ca)})
    assert refused.returncode == 5, refused.stderr
    message = describe(task_id_of(refused), str(tmp_path / "st1"))["FailureDetails"]["Message"]
    assert "TLS certificate is not trusted" in message and "AWS_CA_BUNDLE" in message, message
    assert handshakes_refused == 1  # one attempt: a certificate check is not retried
    assert ok.returncode == 0, ok.stderr
    t = describe(task_id_of(ok), str(tmp_path / "st2"))
    assert t["Lifecycle"] == "SUCCEEDED" and t["Status"]["SucceededCount"] == 40 + 2 + 1 + 1
    direct = seaweed.client()
    assert_bucket_matches_tree(direct, bucket, "x/", root, dir_metadata=False, content_types=False)
    assert open_uploads(direct, bucket) == []
    assert proxy.counts["tls_failed"] == 1 and proxy.counts["requests"] > 40


def test_botocores_certificate_failure_is_permanent_with_the_same_message(tmp_path):
    """The multipart steps go through botocore: its form of the failure is translated alike."""
    import boto3
    import botocore.config

    from pfsxport.store import _translate_library_error

    certs = make_certs(tmp_path)
    with FaultProxy("http://127.0.0.1:9", tls=certs.server_context()) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, aws_access_key_id="a", aws_secret_access_key="b",
                              region_name="us-east-1", config=botocore.config.Config(retries={"max_attempts": 1}))
        with pytest.raises(Exception) as e:
            client.create_multipart_upload(Bucket="b", Key="k")
    err = _translate_library_error("create_multipart_upload", "k", e.value)
    assert not err.retryable and "TLS certificate is not trusted" in str(err) and "AWS_CA_BUNDLE" in str(err)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheme, args, signed, warned", [
    ("http", ["--sign-payload", "auto"], True, False),
    ("http", ["--sign-payload", "never"], False, False),  # SeaweedFS verifies the CRC32: no warning
    ("http", ["--sign-payload", "never", "--checksum", "none"], False, True),
    ("https", ["--sign-payload", "auto"], False, False),
    ("https", ["--sign-payload", "always"], True, False)])
def test_bodies_are_signed_as_sign_payload_says(seaweed, tmp_path, scheme, args, signed, warned):
    certs = make_certs(tmp_path / "tls")
    root = make_tree(tmp_path / "fs", small=10, dirs=1, big=1, parts=2)
    bucket = seaweed.new_bucket()
    tls = certs.server_context() if scheme == "https" else None
    with FaultProxy(seaweed.endpoint, tls=tls, keep_requests=True) as proxy:
        r = export(seaweed, proxy, root, bucket, tmp_path / "st", *args, env={"AWS_CA_BUNDLE": str(certs.ca)})
    assert r.returncode == 0, r.stderr
    assert ("nothing but TCP checks the bodies" in r.stderr) == warned, r.stderr
    assert_bucket_matches_tree(seaweed.client(), bucket, "x/", root, dir_metadata=False, content_types=False)
    # every PUT of the tree's data: 10 small files, 2 parts; the store checked the hash when sent
    puts = {(q.path, *q.query.get("partNumber", [])): q.headers["x-amz-content-sha256"] for q in proxy.requests
            if is_put(q) and q.path.startswith(f"/{bucket}/x/") and not q.path.endswith("/") and "probe" not in q.path}
    assert len([t for t in puts if "/d0/" in t[0]]) == 10 and len([t for t in puts if len(t) == 2]) == 2, puts
    unsigned = {t for t, h in puts.items() if h == "UNSIGNED-PAYLOAD"}
    assert unsigned == (set() if signed else set(puts)), puts
