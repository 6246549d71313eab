"""uvicorn as ``python -m service`` runs it: slow or idle connections are closed, fast ones are served."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import running_service


@pytest.fixture(scope="module")
def strict_server(built_index):
    with running_service(built_index["encoder"], built_index["index"], built_index["database_url"],
                         timeout=300, settings={"header_timeout": "1", "keep_alive_timeout": "1"}) as base:
        yield urlsplit(base)


def _connect(url) -> socket.socket:
    s = socket.create_connection((url.hostname, url.port), timeout=10)
    s.settimeout(10)
    return s


def _response(s: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) off the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    return head


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (reading whatever it sends first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def test_a_client_too_slow_with_its_headers_is_cut_off(strict_server):
    with _connect(strict_server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        assert _closed_within(s, 8)


def test_an_idle_keep_alive_connection_is_closed_and_a_prompt_one_is_served(strict_server):
    with _connect(strict_server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(s).startswith(b"HTTP/1.1 200")
        assert _closed_within(s, 8)  # keep_alive_timeout = 1 s
    with _connect(strict_server) as s:  # two requests on one connection, each prompt
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _response(s).startswith(b"HTTP/1.1 200")
