"""A small fault-injecting HTTP/1.1 reverse proxy for tests: put it on 127.0.0.1 in front of an
S3 endpoint and point the client at `proxy.url`.

Standard library only. Each request is read whole, then either answered by the proxy itself
(a fault) or forwarded unchanged (method, path and query, headers with the client's own Host,
so SigV4 signatures stay valid, and body) to the upstream, whose answer goes back as it came.

Faults, drawn per request from a seeded random generator (`rates`), optionally restricted by
predicates on the request (`when`, for all kinds, and `when_kind`, per kind) and optionally
capped in number (`limit`, per kind: rate 1 and limit 1 faults exactly the first match):

    slowdown  answer 503 SlowDown (S3's throttling error) without forwarding
    internal  answer 500 InternalError without forwarding
    reset     close the connection with a TCP reset before answering, without forwarding
    delay     wait `delay_seconds` before answering, to provoke client read timeouts; if the
              client has hung up meanwhile the request is dropped, else it is forwarded late
    cut       forward, then send the status line, the headers with the full Content-Length
              and half the body, and close; a response without a body is cut before its
              status line (the store acted, the client hears nothing)

With `keep_requests`, `requests` lists every request as the predicates see it.
With `tls` (a server-side ssl.SSLContext) the proxy speaks HTTPS to its clients (plain HTTP
upstream); a client that refuses its certificate is counted as "tls_failed".

`always` is a predicate whose requests are all answered 503 SlowDown: an error that does not
go away ("fails for good"). `counts` tallies requests, each injected fault ("always" for the
former), "delay_dropped" (delayed requests whose client hung up, so never forwarded) and
"upstream_error" (the upstream could not be reached: answered 502, which is no test's fault)
and "upstream_NNN" (the upstream's own 5xx answers, passed on);
`events` lists the faults and the upstream's 5xx as (kind, method, target). All of it is thread-safe.
"""
from __future__ import annotations

import collections
import http.client
import random
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KINDS = ("slowdown", "internal", "reset", "delay", "cut")
# not forwarded either way; Expect is answered by the proxy itself (100 Continue)
_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "expect"}
_ERRORS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (500, "Internal Server Error", "InternalError",
                 "We encountered an internal error. Please try again."),
    "upstream": (502, "Bad Gateway", "BadGateway", "The fault proxy could not reach the upstream."),
}


@dataclass(frozen=True)
class Request:
    """What the predicates see."""

    method: str
    path: str  # without the query, percent-encoded as sent
    query: dict  # parse_qs(keep_blank_values=True)
    headers: dict  # lower-case names

    @property
    def target(self) -> str:
        return self.path + ("?" + "&".join(sorted(self.query)) if self.query else "")


Predicate = Callable[[Request], bool]


# ---- predicates ------------------------------------------------------------------------

def is_put(r: Request) -> bool:
    return r.method == "PUT"


def is_upload_part(r: Request) -> bool:
    """UploadPart: PUT ...?partNumber=N&uploadId=..."""
    return r.method == "PUT" and "partNumber" in r.query


def is_create_multipart(r: Request) -> bool:
    return r.method == "POST" and "uploads" in r.query


def is_complete_multipart(r: Request) -> bool:
    return r.method == "POST" and "uploadId" in r.query


def is_list_uploads(r: Request) -> bool:
    """ListMultipartUploads: GET /bucket?uploads"""
    return r.method == "GET" and "uploads" in r.query


def key_contains(text: str) -> Predicate:
    """Requests whose path contains `text` (compare with the key as it appears in a URL)."""
    return lambda r: text in r.path


def idempotent(r: Request) -> bool:
    """Requests that can be replayed after the store acted on them with the same result:
    everything but the POSTs (CreateMultipartUpload starts a new upload each time; whether a
    second CompleteMultipartUpload succeeds depends on the store) and AbortMultipartUpload."""
    return r.method in ("GET", "HEAD", "PUT") or (r.method == "DELETE" and "uploadId" not in r.query)


def all_of(*preds: Predicate) -> Predicate:
    return lambda r: all(p(r) for p in preds)


def error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>faultproxy</RequestId></Error>").encode()


# ---- the proxy ---------------------------------------------------------------------------

class FaultProxy:
    """`with FaultProxy(upstream, rates={"slowdown": 0.05}, seed=1) as p:` serves on p.url."""

    def __init__(self, upstream: str, *, rates: dict[str, float] | None = None, seed: int = 0,
                 when: Predicate | None = None, when_kind: dict[str, Predicate] | None = None,
                 always: Predicate | None = None, limit: dict[str, int] | None = None,
                 delay_seconds: float = 2.0, upstream_timeout: float = 60.0, client_timeout: float = 120.0,
                 tls: ssl.SSLContext | None = None, keep_requests: bool = False):
        rates = dict(rates or {})
        unknown = set(rates) - set(KINDS)
        if unknown or sum(rates.values()) > 1:
            raise ValueError(f"bad rates {rates!r} (kinds: {', '.join(KINDS)}; total at most 1)")
        u = urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (u.hostname, u.port or 80)
        self.rates = rates
        self.when = when
        self.when_kind = dict(when_kind or {})
        self.always = always
        self.limit = dict(limit or {})
        self.delay_seconds = delay_seconds
        self.upstream_timeout = upstream_timeout
        self.client_timeout = client_timeout
        self.tls = tls
        self.requests: list[Request] | None = [] if keep_requests else None  # every request seen
        self.counts: collections.Counter = collections.Counter()
        self.events: list[tuple[str, str, str]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        handler = type("Handler", (_Handler,), {"proxy": self, "timeout": self.client_timeout})
        server = _Server(("127.0.0.1", 0), handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # wake handlers blocked on idle keep-alive connections
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- bookkeeping --

    @property
    def faults(self) -> int:
        with self._lock:
            return sum(self.counts[k] for k in KINDS + ("always",))

    def summary(self) -> str:
        with self._lock:
            return ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))

    def _choose(self, r: Request) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            if self.requests is not None:
                self.requests.append(r)
            if self.always is not None and self.always(r):
                kind = "always"
            else:
                x = self._rng.random()  # one draw per request, whatever it asks for
                kind, acc = None, 0.0
                for k in KINDS:
                    acc += self.rates.get(k, 0.0)
                    if x < acc:
                        kind = k
                        break
                if kind is not None and not ((self.when is None or self.when(r)) and
                                             (kind not in self.when_kind or self.when_kind[kind](r))):
                    kind = None
                if kind is not None and self.counts[kind] >= self.limit.get(kind, float("inf")):
                    kind = None
            if kind is not None:
                self.counts[kind] += 1
                self.events.append((kind, r.method, r.target))
            return kind

    def _record(self, what: str, r: Request) -> None:
        with self._lock:
            self.counts[what] += 1
            self.events.append((what, r.method, r.target))

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _track(self, conn: socket.socket, on: bool) -> None:
        with self._lock:
            (self._conns.add if on else self._conns.discard)(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() wakes the handlers itself; never wait on a client
    request_queue_size = 512  # a parallel client opens many connections at once: no SYN dropped


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy  # set on the subclass made by FaultProxy.start
    _upstream: http.client.HTTPConnection | None = None
    _tls_failed = False

    def setup(self) -> None:
        if self.proxy.tls is not None:  # the handshake in this connection's own thread
            try:
                self.request = self.proxy.tls.wrap_socket(self.request, server_side=True)
            except OSError:  # ssl.SSLError among them: the client refused the certificate
                self.proxy._count("tls_failed")
                self._tls_failed = True  # and the socket is closed: nothing more to do
                return
        super().setup()
        self.proxy._track(self.connection, True)

    def handle(self) -> None:
        if not self._tls_failed:
            super().handle()

    def finish(self) -> None:
        if self._tls_failed:
            return
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.proxy._track(self.connection, False)
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (OSError, http.client.HTTPException):
            self.close_connection = True

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method goes through the proxy
            return self._proxy
        raise AttributeError(name)

    # -- one request --

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self._read_exact(size)
                self.rfile.readline()
        return self._read_exact(int(self.headers.get("Content-Length") or 0))

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.rfile.read(n - len(buf))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            buf += chunk
        return bytes(buf)

    def _proxy(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        req = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True),
                      {k.lower(): v for k, v in self.headers.items()})
        kind = self.proxy._choose(req)
        if kind in ("slowdown", "internal", "always"):
            return self._error("slowdown" if kind == "always" else kind)
        if kind == "reset":
            return self._abort(reset=True)
        if kind == "delay":
            if self.proxy._stopping.wait(self.proxy.delay_seconds) or self._client_gone():
                self.proxy._count("delay_dropped")  # the client gave up: never forwarded
                return self._abort(reset=False)
        try:
            status, reason, headers, data = self._forward(body)
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            self.proxy._count("upstream_error")  # not a fault of ours: tests may assert there is none
            return self._error("upstream")
        if status >= 500:  # the store's own error, not one of ours: on record, as tests count retries
            self.proxy._record(f"upstream_{status}", req)
        if self.command == "HEAD":
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
        else:
            length = str(len(data))
        head = [f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers
                 if k.lower() not in _HOP and k.lower() != "content-length"]
        head.append(f"Content-Length: {length}\r\n\r\n".encode("latin-1"))
        if kind == "cut":
            # Half the body; with no body to cut, nothing at all: http.client takes a header
            # block cut short by EOF for a whole one, which no client could tell from success.
            if data and self.command != "HEAD":
                self.wfile.write(b"".join(head) + data[:len(data) // 2])
            return self._abort(reset=False)
        self.wfile.write(b"".join(head))
        if data and self.command != "HEAD":
            for i in range(0, len(data), 1 << 16):  # stream it back in pieces
                self.wfile.write(data[i:i + (1 << 16)])
        self.wfile.flush()

    def _forward(self, body: bytes):
        reused = self._upstream is not None
        try:
            return self._send_upstream(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            # the upstream closed the idle keep-alive connection before it read this request:
            # send it again on a new connection
            self._drop_upstream()
            return self._send_upstream(body)

    def _send_upstream(self, body: bytes):
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=self.proxy.upstream_timeout)
        conn = self._upstream
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():  # Host and Content-Length as the client sent them
            if k.lower() not in _HOP:
                conn.putheader(k, v)
        if "Content-Length" not in self.headers and (body or self.command in ("PUT", "POST")):
            conn.putheader("Content-Length", str(len(body)))  # it came chunked: send it whole
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self._drop_upstream()
        return resp.status, resp.reason, resp.getheaders(), data

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _error(self, which: str) -> None:
        status, reason, code, message = _ERRORS[which]
        body = error_body(code, message)
        self.wfile.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """True if the client closed its side (it timed out and gave up on this request)."""
        try:
            self.connection.setblocking(False)
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            finally:
                self.connection.setblocking(True)
                self.connection.settimeout(self.proxy.client_timeout)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _abort(self, reset: bool) -> None:
        """End the connection now: with a TCP reset (RST), or after what was written (FIN)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_WR)
            self.connection.close()
        except OSError:
            pass

