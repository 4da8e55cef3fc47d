"""pfsxport.store._env_credentials: the keys botocore's chain would take from the environment."""
from __future__ import annotations

import pytest

from pfsxport.config import S3Settings
from pfsxport.store import _env_credentials


@pytest.mark.parametrize("env, profile, expected", [
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}, None, ("a", "s", None)),
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}, None, ("a", "s", "t")),
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SECURITY_TOKEN": "old"}, None, ("a", "s", "old")),
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_PROFILE": "p"}, None, ("a", "s", None)),
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}, "site", None),  # a named profile wins
    ({"AWS_ACCESS_KEY_ID": "a"}, None, None),  # half a key pair: botocore's chain decides
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": ""}, None, None),
    ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"},
     None, None),  # refreshable: left to botocore
])
def test_env_credentials(monkeypatch, env, profile, expected):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
              "AWS_PROFILE", "AWS_CREDENTIAL_EXPIRATION"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    got = _env_credentials(S3Settings(profile=profile))
    if expected is None:
        assert got is None
    else:
        f = got.get_frozen_credentials()
        assert (f.access_key, f.secret_key, f.token) == expected
