"""A small HTTP client for the tests, `eventually` for conditions that settle, and the client side
of a slow-handshake flood."""

from __future__ import annotations

import errno
import http.client
import json
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from servers import HOST


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]  # lowercased names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def upstream(self) -> dict:
        """What the echo upstream received (only meaningful when the request got through)."""
        return json.loads(self.body)

    def upstream_headers(self, name: str) -> list[str]:
        return self.upstream["headers"].get(name.lower(), [])


def request(port: int, method: str = "GET", path: str = "/", headers=None, body: bytes | None = None,
            timeout: float = 10.0) -> Response:
    """One HTTP/1.1 request on a fresh connection. headers: dict or list of (name, value) pairs."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        got: dict[str, list[str]] = {}
        for name, value in resp.getheaders():
            got.setdefault(name.lower(), []).append(value)
        return Response(resp.status, got, resp.read())
    finally:
        conn.close()


def eventually(check, timeout: float = 15.0, interval: float = 0.1):
    """`check()` once it is truthy, or its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def client_hello() -> bytes:
    """The first flight of a TLS client (its ClientHello), made by Python's ssl."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class StalledHandshakes:
    """`count` TCP connections to `port`, each sending a TLS ClientHello and then nothing, so that
    the server waits for the rest of a handshake that never comes: a slow-handshake flood. With
    `refill`, a connection the server closes is opened again, so that `count` stay open. Runs in a
    thread between `start()` (or `with`) and `stop()`; the process needs `count` spare fds."""

    def __init__(self, port: int, count: int, refill: bool = False) -> None:
        self.port, self.count, self.refill = port, count, refill
        self.hello = client_hello()
        self.opened = 0
        self.closed_by_server = 0
        self.failed = 0
        self.open_now = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalled-handshakes", daemon=True)

    def start(self) -> "StalledHandshakes":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def __enter__(self) -> "StalledHandshakes":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _open(self, sel: selectors.BaseSelector) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex((HOST, self.port)) not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            return
        sel.register(sock, selectors.EVENT_WRITE)
        self.opened += 1
        self.open_now += 1

    def _drop(self, sel: selectors.BaseSelector, sock: socket.socket, by_server: bool) -> None:
        sel.unregister(sock)
        sock.close()
        self.open_now -= 1
        if by_server:
            self.closed_by_server += 1
        else:
            self.failed += 1
        if self.refill and not self._stop.is_set():
            self._open(sel)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for _ in range(self.count):
                if self._stop.is_set():
                    break
                self._open(sel)
            while not self._stop.is_set():
                for key, events in sel.select(0.2):
                    sock = key.fileobj
                    if events & selectors.EVENT_WRITE:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            self._drop(sel, sock, by_server=False)
                            continue
                        sock.send(self.hello)  # a few hundred bytes: the socket buffer takes them
                        sel.modify(sock, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)  # the server's flight, read and dropped
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._drop(sel, sock, by_server=True)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()
            self.open_now = 0
