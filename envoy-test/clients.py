"""A small HTTP client for the tests, and `eventually` for conditions that settle."""

from __future__ import annotations

import http.client
import json
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
