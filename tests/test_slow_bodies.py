"""Slow request bodies against the real server (granian has no body timeout of its own): a body that
trickles in past APIKEYS_BODY_TIMEOUT is answered 408 and its connection closed, and however many
clients hold bodies back, /healthz and /v1/auth keep answering (at most WEB_THREADS - 1 threads
read bodies). Loopback only; every loop is bounded."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from .servers import start_server

HEADERS = b"POST /v1/keys/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"


def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data  # the server closed the connection
        data += chunk


@pytest.fixture
def server(database_url, tmp_path):
    srv = start_server(database_url, tmp_path, {"WEB_CONCURRENCY": "1", "WEB_THREADS": "2",
                                                "APIKEYS_BODY_TIMEOUT": "1"})
    yield srv
    srv.stop()


def test_a_body_that_trickles_in_past_the_timeout_is_408_and_the_connection_closed(server):
    sock = _connect(server)
    try:
        sock.sendall(HEADERS + b'{"key": ')
        time.sleep(1.5)  # past APIKEYS_BODY_TIMEOUT=1
        rest = b'"apk_' + b"x" * 23 + b'"}'
        sock.sendall(rest + b" " * (40 - 8 - len(rest)))  # the 40 bytes Content-Length promised
        answer = _answer(sock)  # returns only once the server closes the connection
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"took longer than 1 s" in answer


def test_health_and_key_checks_keep_answering_while_bodies_are_held_back(server):
    held = []
    try:
        for _ in range(6):  # more than the worker has threads
            sock = _connect(server)
            sock.sendall(HEADERS + b"{")
            held.append(sock)
        time.sleep(0.3)
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as response:
            assert response.status == 200
        request = urllib.request.Request(server.url + "/v1/auth", headers={"X-API-Key": "apk_" + "x" * 28})
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError as refused:
            assert refused.code == 401 and json.loads(refused.read())["code"] == "MALFORMED"
        # A POST that cannot get a body slot is told to come back, quickly, and its connection closed.
        late = _connect(server)
        late.sendall(HEADERS + b'{"key": "apk_xxxxxxxxxxxxxxxxxxxxxxxxxx"} ')
        answer = _answer(late)
        late.close()
        assert answer.startswith((b"HTTP/1.1 503", b"HTTP/1.1 200")), answer[:200]
    finally:
        for sock in held:
            sock.close()
