"""Bodies trickled in for ever, against the real server: each is answered 408 within
APIKEYS_BODY_TIMEOUT (plus a little) and its connection closed, whatever Content-Length it promised,
and while they trickle /healthz, /v1/auth and complete POSTs keep their ordinary answers (a trickled
body must hold no request thread). Loopback only; every loop is bounded."""

from __future__ import annotations

import json
import socket
import time

import pytest

from storage import open_store

from .helpers import ADMIN
from .servers import http_request, start_server

TRICKLERS = 6  # more than the worker has threads (WEB_THREADS=2)
STEP = 0.2  # seconds between two bytes of a trickled body
MAX_STEPS = 40  # 8 s: far past APIKEYS_BODY_TIMEOUT=1; a bound for a broken server, not a speed goal


def _head(length: int | None = 60000) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /v1/keys/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n").encode()


@pytest.fixture
def server(database_url, tmp_path):
    srv = start_server(database_url, tmp_path, {"WEB_CONCURRENCY": "1", "WEB_THREADS": "2",
                                                "APIKEYS_BODY_TIMEOUT": "1"})
    yield srv
    srv.stop_quietly()


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    return sock


def _poll(sock: socket.socket, received: bytearray) -> bool:
    """Whatever the server sent so far; True once it closed the connection."""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:  # reset: closed
            return True
        if not chunk:
            return True
        received += chunk


def test_bodies_trickled_for_ever_get_408_and_closed_connections_while_everything_else_answers(server, database_url):
    store = open_store(database_url)
    try:
        secret = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0].secret
    finally:
        store.close()
    socks = [_connect(server) for _ in range(TRICKLERS)]
    socks.append(_connect(server))  # headers only, then nothing at all
    socks.append(_connect(server))  # chunked, trickled
    received = [bytearray() for _ in socks]
    closed = [False] * len(socks)
    try:
        for i, sock in enumerate(socks):
            sock.sendall(_head(None) + b"1\r\n{\r\n" if i == len(socks) - 1 else _head() + b"{")
        during = []
        for step in range(MAX_STEPS):
            time.sleep(STEP)
            for i, sock in enumerate(socks):
                if closed[i]:
                    continue
                if i != TRICKLERS:  # the silent one sends nothing more
                    try:
                        sock.send(b"1\r\n \r\n" if i == len(socks) - 1 else b" ")
                    except OSError:
                        pass
                closed[i] = _poll(sock, received[i])
            if step in (2, 3):  # while every one of them is trickling
                during.append(http_request(server.url, "GET", "/healthz", timeout=5)[0])
                during.append(http_request(server.url, "GET", "/v1/auth", headers={"X-API-Key": secret},
                                           timeout=5)[0])
                status, _, body = http_request(server.url, "POST", "/v1/keys/verify",
                                               json.dumps({"key": secret}), timeout=5)
                during.append((status, json.loads(body).get("code")))
            if all(closed):
                break
    finally:
        for sock in socks:
            sock.close()
    assert during == [200, 204, (200, "VALID")] * 2
    for i, answer in enumerate(received):
        assert closed[i], f"connection {i} was still open after {MAX_STEPS * STEP:g} s: {bytes(answer[:80])!r}"
        assert answer.startswith(b"HTTP/1.1 408"), (i, bytes(answer[:200]))
        assert b"took longer than 1 s" in answer
    assert "Traceback" not in server.log()
    # Afterwards the server answers bodies as ever.
    status, _, body = http_request(server.url, "POST", "/v1/keys/verify", json.dumps({"key": secret}))
    assert (status, json.loads(body)["code"]) == (200, "VALID")

