"""Where the store's credentials, region and endpoint come from, against a real SeaweedFS.

The environment's keys are signed with directly (botocore is not even imported for a task
that only needs single PUTs, multipart uploads, HEADs and DELETEs); a named profile goes through botocore's
chain and, as there, beats keys in the environment; a shared credentials file works."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import list_keys, run_export

CHECK = """
import sys, zlib
from pfsxport.config import S3Settings
from pfsxport.store import S3Store
s = S3Store(sys.argv[1], S3Settings(profile=sys.argv[2] or None))
s.checksum = True
s.put_object("probe/x", b"hello", {"file-permissions": "0100644"}, "text/plain")
u = s.create_multipart("probe/big", {"file-permissions": "0100600"}, "application/octet-stream")
parts = [b"x" * (5 << 20), b"end"]
done = [(n, *s.upload_part("probe/big", u, n, p, zlib.crc32(p))) for n, p in enumerate(parts, 1)]
s.complete_multipart("probe/big", u, done)
s.abort_multipart("probe/gone", s.create_multipart("probe/gone", {}, "text/plain"))
big = s.head_object("probe/big")
print(s.head_object("probe/x")["ContentLength"], big["ContentLength"], big["Metadata"]["file-permissions"],
      "botocore.session" in sys.modules)
"""


def _no_aws_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def _credentials_file(tmp_path, profile: str, access: str, secret: str) -> str:
    path = tmp_path / "credentials"
    path.write_text(f"[{profile}]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n")
    return str(path)


def test_keys_from_the_environment_need_no_botocore(seaweed):
    bucket = seaweed.new_bucket()
    r = subprocess.run([sys.executable, "-c", CHECK, bucket, ""], env={**_no_aws_env(), **seaweed.env()},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["5", str((5 << 20) + 3), "0100600", "False"]
    assert seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the abort


def test_a_named_profile_goes_through_botocore(seaweed, tmp_path):
    bucket = seaweed.new_bucket()
    env = {**_no_aws_env(), "AWS_ENDPOINT_URL": seaweed.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_SHARED_CREDENTIALS_FILE": _credentials_file(tmp_path, "site", seaweed.access, seaweed.secret)}
    r = subprocess.run([sys.executable, "-c", CHECK, bucket, "site"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["5", str((5 << 20) + 3), "0100600", "True"]


def test_an_explicit_profile_beats_keys_in_the_environment(seaweed, tmp_path):
    """As in botocore: naming a profile drops the environment's keys from the chain. The
    profile's keys are wrong here, so the task fails at its probe, naming the cause."""
    bucket = seaweed.new_bucket()
    creds = _credentials_file(tmp_path, "wrong", "not-a-key", "not-a-secret")
    tree = tmp_path / "fs"
    tree.mkdir()
    (tree / "f").write_bytes(b"data")
    args = ["--fs-root", str(tree), "--repository", f"s3://{bucket}/", "--state-dir", str(tmp_path / "st")]
    env = {"AWS_SHARED_CREDENTIALS_FILE": creds}
    r = run_export(seaweed, args + ["--profile", "wrong"], env=env)
    assert r.returncode == 5, r.stderr
    assert "cannot write to" in r.stderr and ("AccessDenied" in r.stderr or "InvalidAccessKeyId" in r.stderr)
    assert list_keys(seaweed.client(), bucket) == {}
    r = run_export(seaweed, args, env=env)  # no profile named: the environment's keys
    assert r.returncode == 0, r.stderr
    assert "f" in list_keys(seaweed.client(), bucket)
