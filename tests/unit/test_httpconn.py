"""The lean HTTP/1.1 client against a scripted server on 127.0.0.1: the answer shapes an S3
store may send (Content-Length, chunked, to the end of the connection, interim 100, HEAD),
keep-alive reuse, and every way a connection can fail, each a defined exception."""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from tlscert import make_certs

from pfsxport.httpconn import BadAnswer, ConnectFailed, Pool
from pfsxport.localstore import free_ports


class Scripted:
    """Accepts connections; answers the n-th request (over all connections) with
    `answers[n]`: bytes to send, or a callable(conn) doing something else. Records every
    request's head and body and which connection (accept order) it came on."""

    def __init__(self, answers: list, tls: ssl.SSLContext | None = None):
        self.answers = list(answers)
        self.tls = tls
        self.requests: list[tuple[int, bytes, bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._conn, args=(conn, n), daemon=True).start()
            n += 1

    def _conn(self, conn: socket.socket, which: int) -> None:
        buf = b""
        try:
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError:  # the client refused the certificate
                    return
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                self.requests.append((which, head, body))
                answer = self.answers.pop(0)
                if callable(answer):
                    answer(conn)
                    return
                conn.sendall(answer)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


def pool(server: Scripted, **kw) -> Pool:
    return Pool("127.0.0.1", server.port, **kw)


def get(p: Pool, method: str = "GET", body: bytes = b""):
    return p.request(method, "/b/k", {"Host": "example"}, body)


OK = b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 5\r\n\r\nhello"


def test_one_connection_carries_many_requests_and_the_body_goes_out_whole():
    s = Scripted([OK, OK, OK])
    p = pool(s)
    body = bytes(range(256)) * 1024  # over 64 KiB: head and body sent apart
    answers = [get(p, "PUT", body) for _ in range(3)]
    assert [r.data for r in answers] == [b"hello"] * 3
    assert answers[0].headers == {"etag": '"e"', "content-length": "5"}
    assert [c for c, _, _ in s.requests] == [0, 0, 0]
    assert s.requests[0][1].startswith(b"PUT /b/k HTTP/1.1\r\nHost: example\r\n")
    assert s.requests[0][2] == body and f"Content-Length: {len(body)}".encode() in s.requests[0][1]


def test_chunked_interim_and_head_answers():
    chunked = (b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n<Erro\r\n3;ext=1\r\nr/>\r\n0\r\nX-Trailer: t\r\n\r\n")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nx-amz-meta-file-owner: 7\r\n\r\n"
    s = Scripted([chunked, interim, head, OK])
    p = pool(s)
    r = get(p)
    assert (r.status, r.data) == (404, b"<Error/>")
    assert get(p).data == b"hello"
    r = get(p, "HEAD")
    assert (r.status, r.data, r.headers["content-length"], r.headers["x-amz-meta-file-owner"]) == \
        (200, b"", "12345", "7")
    assert get(p).data == b"hello"
    assert {c for c, _, _ in s.requests} == {0}  # all on one connection


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
])
def test_an_answer_that_ends_the_connection_is_not_reused(answer):
    s = Scripted([answer, OK])
    p = pool(s)
    assert get(p).data == b"hello" and get(p).data == b"hello"
    assert [c for c, _, _ in s.requests] == [0, 1]


def test_a_body_delimited_by_the_close():
    def close_delimited(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nto the end")
        conn.shutdown(socket.SHUT_WR)

    s = Scripted([close_delimited, OK])
    p = pool(s)
    assert get(p).data == b"to the end" and get(p).data == b"hello"
    assert [c for c, _, _ in s.requests] == [0, 1]


def test_an_idle_connection_the_server_closed_is_dropped_before_use():
    s = Scripted([OK, OK])
    p = pool(s)
    assert get(p).data == b"hello"
    s.conns[0].shutdown(socket.SHUT_RDWR)  # the server ends the idle keep-alive connection
    time.sleep(0.1)
    assert get(p).data == b"hello"  # no error: a new connection
    assert [c for c, _, _ in s.requests] == [0, 1]


@pytest.mark.parametrize("answer, message", [
    (lambda conn: None, "closed before the answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", "closed in the answer's header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", "closed in the answer's body (4 of 10 bytes)"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
])
def test_a_broken_answer_is_a_bad_answer_and_the_connection_is_not_reused(answer, message):
    def then_close(conn):
        if isinstance(answer, bytes):
            conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)

    s = Scripted([then_close, OK])
    p = pool(s)
    with pytest.raises(BadAnswer, match=message.replace("(", r"\(").replace(")", r"\)")):
        get(p)
    assert get(p).data == b"hello"
    assert [c for c, _, _ in s.requests] == [0, 1]


def test_a_header_without_end_is_refused():
    s = Scripted([lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)])
    with pytest.raises(BadAnswer, match="too long"):
        get(pool(s))


def test_a_silent_server_times_out():
    s = Scripted([lambda conn: time.sleep(2)])
    with pytest.raises(TimeoutError):
        get(pool(s, read_timeout=0.3))


def test_nothing_listening_is_connect_failed():
    port = free_ports(1)[0]
    with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}") as e:
        Pool("127.0.0.1", port).request("GET", "/", {"Host": "x"})
    assert isinstance(e.value.__cause__, ConnectionRefusedError)


def test_a_socket_connected_to_itself_is_connect_failed_not_a_hang(monkeypatch):
    """A loopback port nobody listens on, drawn as the source port too, connects to itself
    (TCP simultaneous open): the request would wait for an answer that never comes."""
    def self_connected(addr, timeout=None):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", s.getsockname()[1]))
        return s
    monkeypatch.setattr(socket, "create_connection", self_connected)
    with pytest.raises(ConnectFailed, match="nothing listens there"):
        Pool("127.0.0.1", 1, read_timeout=30).request("GET", "/", {"Host": "x"})


def test_https_keeps_its_connection_and_checks_the_certificate(tmp_path):
    certs = make_certs(tmp_path)
    s = Scripted([OK, OK, OK], tls=certs.server_context())
    p = pool(s, tls=certs.client_context())
    body = bytes(range(256)) * 1024
    assert [get(p, "PUT", body).data for _ in range(3)] == [b"hello"] * 3
    assert [c for c, _, _ in s.requests] == [0, 0, 0]  # one TLS session for all three
    assert s.requests[2][2] == body
    # a client that does not trust the CA refuses the server
    s = Scripted([OK], tls=certs.server_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        get(pool(s, tls=ssl.create_default_context()))
    assert s.requests == []


@pytest.mark.parametrize("target, headers", [
    ("/k", {"x-amz-meta-a": "1\r\nx-injected: yes"}),
    ("/k", {"x-amz-meta-a": "nul\x00"}),
    ("/k", {"bad name": "v"}),
    ("/k HTTP/1.1\r\nHost: elsewhere\r\n\r\nGET /other", {}),
])
def test_a_line_break_in_a_header_or_the_target_is_refused_before_anything_is_sent(target, headers):
    s = Scripted([OK])
    with pytest.raises(ValueError, match="line break"):
        pool(s).request("PUT", target, {"Host": "h", **headers}, b"x")
    assert s.requests == []  # nothing went out
