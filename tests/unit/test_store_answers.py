"""The store's own signed requests against a scripted server: S3's 200 answers that carry an
<Error> (CompleteMultipartUpload may send one) raise like the same error with its status,
and a field is read from the answer's XML, entities decoded."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_httpconn import Scripted

from pfsxport.errors import AccessDenied, RetryableStoreError
from pfsxport.httpconn import Pool
from pfsxport.store import _Signed


def signed(server: Scripted) -> _Signed:
    creds = SimpleNamespace(get_frozen_credentials=lambda: SimpleNamespace(access_key="a", secret_key="s", token=None))
    return _Signed(Pool("127.0.0.1", server.port), "/b/", f"127.0.0.1:{server.port}", creds, "us-east-1")


def answer(body: str) -> bytes:
    data = body.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


def test_a_field_of_the_answer_with_its_entities_decoded_and_the_query_signed():
    s = Scripted([answer("<InitiateMultipartUploadResult><UploadId>a&amp;b.c</UploadId>"
                         "</InitiateMultipartUploadResult>")])
    assert signed(s).answer_field("create", "POST", "k", "UploadId", query={"uploads": ""}) == "a&b.c"
    head = s.requests[0][1].decode()
    assert head.startswith("POST /b/k?uploads= HTTP/1.1") and "Content-Length: 0" in head


@pytest.mark.parametrize("body, error", [
    ("<Error><Code>InternalError</Code><Message>try again</Message></Error>", RetryableStoreError),
    ("<Error><Code>AccessDenied</Code><Message>no</Message></Error>", AccessDenied),
    ("<CompleteMultipartUploadResult></CompleteMultipartUploadResult>", RetryableStoreError),  # no field
])
def test_an_error_in_a_200_answer_raises(body, error):
    s = Scripted([answer(body)])
    with pytest.raises(error):
        signed(s).answer_field("complete", "POST", "k", "UploadId", b"<x/>", query={"uploadId": "u"})


def test_only_the_error_check_when_no_field_is_wanted():
    s = Scripted([answer("<CompleteMultipartUploadResult/>"), answer("<Error><Code>SlowDown</Code></Error>")])
    f = signed(s)
    assert f.answer_field("complete", "POST", "k", None, b"<x/>", query={"uploadId": "u"}) == ""
    with pytest.raises(RetryableStoreError, match="SlowDown"):
        f.answer_field("complete", "POST", "k", None, b"<x/>", query={"uploadId": "u"})


def test_list_dir_reads_url_encoded_pages(monkeypatch):
    """verify's one-level listing on the signed path: keys and common prefixes URL-decoded
    (a '+' is a space, %2B a plus, control characters come through), pages followed."""
    from pfsxport.config import S3Settings
    from pfsxport.store import S3Store

    page1 = ("<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1</NextContinuationToken>"
             "<Contents><Key>p%2Fa+b%2Bc</Key><Size>3</Size></Contents>"
             "<Contents><Key>p%2Fnew%0Aline%01</Key><Size>0</Size></Contents>"
             "<CommonPrefixes><Prefix>p%2Fd%2F</Prefix></CommonPrefixes></ListBucketResult>")
    page2 = ("<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>p%2F%C3%A9</Key><Size>7</Size>"
             "</Contents></ListBucketResult>")
    s = Scripted([answer(page1), answer(page2)])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = S3Store("b", S3Settings(endpoint_url=f"http://127.0.0.1:{s.port}", region="us-east-1"))
    assert store.list_dir("p/") == ({"p/a b+c": 3, "p/new\nline\x01": 0, "p/é": 7}, ["p/d/"])
    first, second = (r[1].decode() for r in s.requests)
    assert first.startswith("GET /b?delimiter=%2F&encoding-type=url&list-type=2&prefix=p%2F HTTP/1.1")
    assert "continuation-token=t%261" in second.split("\r\n")[0]
