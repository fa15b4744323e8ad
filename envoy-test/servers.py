"""What the tests run beside Envoy on 127.0.0.1: an echo upstream that reports what it received,
a JWKS (or any JSON) endpoint the test controls, a TCP service, and free ports."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before: listeners
    and test servers bind later, and the kernel may offer a just-released port again."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts connections on {HOST}:{port}")
            time.sleep(0.05)


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        payload = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def log_message(self, *args) -> None:
        pass


class EchoServer:
    """Answers every request 200 with JSON {method, path, headers, body} of what it received."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer((HOST, free_port()), _EchoHandler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "EchoServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class _JwksHandler(BaseHTTPRequestHandler):
    server: "_JwksHTTPServer"

    def do_GET(self) -> None:
        owner = self.server.owner
        mode, body, delay, route = owner.record_request(self.path)
        if route is not None and mode == "ok":
            mode, body = "route", route[1]
        if delay:
            time.sleep(delay)
        if mode == "hang":
            time.sleep(owner.hang_seconds)
            return
        if mode == "partial":  # promises a full key set, sends a fragment, hangs up
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        status, payload = {"ok": (200, body), "500": (500, b"upstream broke"),
                           "garbage": (200, b"<html>this is not a key set</html>"),
                           "route": (route[0] if route else 200, body)}[mode]
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


class _JwksHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "JwksServer"


class JwksServer:
    """A JWKS endpoint the test controls: what it serves, how it fails, how often it was asked.
    Modes: "ok", "500", "garbage", "hang" (answers nothing for `hang_seconds`), "partial" (a
    truncated body, then the connection closes). With `routes` (`set`), each path has its own
    document and any other path is a 404, as an OpenID provider's discovery document and keys."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.body = b'{"keys":[]}'
        self.mode = "ok"
        self.delay = 0.0
        self.hang_seconds = 5.0
        self.paths: list[str] = []
        self.routes: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._server: _JwksHTTPServer | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}/.well-known/jwks.json"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.paths)

    def serve(self, jwks_json: str) -> None:
        with self._lock:
            self.body = jwks_json.encode()
            self.mode = "ok"

    def fail(self, mode: str) -> None:
        with self._lock:
            self.mode = mode

    def set(self, path: str, body: dict | str, status: int = 200) -> None:
        """Serve `body` (a JSON document, or its text) at `path` alone."""
        text = body if isinstance(body, str) else json.dumps(body)
        with self._lock:
            self.routes[path] = (status, text.encode())

    def asked(self, path: str) -> int:
        with self._lock:
            return self.paths.count(path)

    def record_request(self, path: str) -> tuple[str, bytes, float, tuple[int, bytes] | None]:
        with self._lock:
            self.paths.append(path)
            route = self.routes.get(path, (404, b"not found")) if self.routes else None
            return self.mode, self.body, self.delay, route

    def start(self) -> "JwksServer":
        self._server = _JwksHTTPServer((HOST, self.port), _JwksHandler)
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class TcpServer:
    """A TCP service on 127.0.0.1: echoes what it receives, or with `banner` speaks first (as
    MySQL or SMTP do) and then echoes. Counts the connections it accepted and the bytes it got."""

    def __init__(self, banner: bytes = b"") -> None:
        self.banner = banner
        self.sock = socket.socket()
        # A port of free_port's: one the kernel picked here could be one handed to an Envoy
        # that binds it later.
        self.sock.bind((HOST, free_port()))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = b""
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.banner:
                    conn.sendall(self.banner)
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += data
                    conn.sendall(data)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop = True
        self.sock.close()

    def __enter__(self) -> "TcpServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
