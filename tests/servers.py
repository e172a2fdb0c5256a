"""The real server as a process (``python -m bot``), and requests to it: over HTTP, over a raw
socket, or straight to a WSGI app in this process (where the socket is not the point); and a
stand-in for GitHub's secret scanning public-keys endpoint that signs alerts as GitHub does.

``ServerProcess.request`` and ``InProcessApp.request`` answer alike: ``(status, headers, body)``
with the header names as the application wrote them, the body as bytes.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .helpers import ADMIN, free_port

Answer = tuple[int, dict[str, str], bytes]


class Headers(dict):
    """Response headers, looked up in any case (HTTP names are case-insensitive, and granian sends
    them in lower case)."""

    def __init__(self, pairs):
        super().__init__((name.lower(), value) for name, value in pairs)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default=None):
        return super().get(name.lower(), default)


def http_request(url: str, method: str, path: str, body: bytes | str | None = None,
                 headers: dict | None = None, timeout: float = 10) -> Answer:
    """One request on a new connection to the server at ``url``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, Headers(resp.getheaders()), data
    finally:
        conn.close()


class _Recorded:
    """What a server sent on a socket, readable by http.client.HTTPResponse."""

    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, *args, **kwargs):
        return io.BytesIO(self.data)


def raw_exchange(url: str, raw: bytes, *, wait: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection and parse the first answer (lower-case headers). Our side
    stays open (a half-closed connection is one granian, like hyper, drops unanswered) until the
    answer is complete, the server closes, or ``wait`` seconds pass (TimeoutError: no answer)."""
    import socket

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(raw)
        received = b""
        while not _complete(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    if not received:
        raise http.client.RemoteDisconnected("the server closed the connection without an answer")
    resp = http.client.HTTPResponse(_Recorded(received))
    resp.begin()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return b" 204 " in head.split(b"\r\n")[0] or b" 304 " in head.split(b"\r\n")[0]


def wsgi_request(app: Any, method: str, path: str, body: bytes | str | None = None,
                 headers: dict | None = None) -> Answer:
    """One request handed to the WSGI ``app`` in this process, with the environ a server would
    build for what http.client sends (a body's Content-Length; ``Content-Length: 0`` for a POST,
    PUT or PATCH without one)."""
    if isinstance(body, str):
        body = body.encode("iso-8859-1")  # as http.client encodes a str body
    path_info, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": path_info, "QUERY_STRING": query, "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(body or b""), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
    elif method in ("POST", "PUT", "PATCH"):
        environ["CONTENT_LENGTH"] = "0"
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    answered: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info=None):
        answered["status"] = int(status.split()[0])
        answered["headers"] = dict(response_headers)

    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return answered["status"], answered["headers"], data


@dataclass
class InProcessApp:
    """A WSGI app in this process (one worker's ``bot.server.create_app``), asked like a server."""

    app: Any

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> Answer:
        return wsgi_request(self.app, method, path, body, headers)


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> Answer:
        return http_request(self.url, method, path, body, headers)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def stop_quietly(self) -> None:
        """At teardown: make sure it is gone, never masking the test's own failure."""
        try:
            self.stop()
        except Exception:  # noqa: BLE001
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def start_server(database_url: str, tmp_path: Path, extra_env: dict[str, str] | None = None,
                 wait: bool = True) -> ServerProcess:
    """Start ``python -m bot`` on a free port and (with ``wait``) wait until /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update({"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
                "WEB_CONCURRENCY": "2", "APIKEYS_ADMINS": ADMIN, **(extra_env or {})})
    log_path = tmp_path / f"server-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=tmp_path, env=env,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    if not wait:
        return server
    try:
        wait_healthy([server], timeout=30)
    except AssertionError as exc:
        server.stop_quietly()
        raise RuntimeError(str(exc)) from None
    return server


def wait_healthy(servers: list[ServerProcess], timeout: float = 40.0) -> None:
    """Wait until every server answers 200 on /healthz (started with ``wait=False``)."""
    pending = list(servers)
    deadline = time.monotonic() + timeout
    while pending:
        for server in list(pending):
            if server.proc.poll() is not None:
                raise AssertionError(f"server {server.url} exited with {server.proc.returncode}:\n{server.log()}")
            try:
                with urllib.request.urlopen(server.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        pending.remove(server)
            except OSError:
                pass
        if pending:
            if time.monotonic() > deadline:
                logs = "\n\n".join(f"--- {s.url}\n{s.log()}" for s in pending)
                raise AssertionError(f"{len(pending)} server(s) did not become healthy in {timeout:g}s:\n{logs}")
            time.sleep(0.1)


class GitHubKeysStub:
    """A local stand-in for GitHub's secret scanning public-keys endpoint
    (``GET /meta/public_keys/secret_scanning``), holding the private halves so that it can sign alerts
    as GitHub does: ECDSA P-256 / SHA-256 over the raw body, base64 DER in
    ``Github-Public-Key-Signature``, the key named by ``Github-Public-Key-Identifier``."""

    PATH = "/meta/public_keys/secret_scanning"

    def __init__(self):
        self.private: dict[str, Any] = {}   # identifier -> private key (published or not)
        self.published: list[str] = []
        self.current: str | None = None
        self.fetches = 0
        self._server = None

    def start(self) -> "GitHubKeysStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                stub.fetches += 1
                body = json.dumps(stub.document()).encode() if self.path == stub.PATH else b"{}"
                self.send_response(200 if self.path == stub.PATH else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="github-keys-stub", daemon=True).start()
        self.rotate()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.PATH}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def new_key(self) -> str:
        """A fresh P-256 key, not published (yet): its identifier."""
        key = ec.generate_private_key(ec.SECP256R1())
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        identifier = hashlib.sha256(der).hexdigest()
        self.private[identifier] = key
        return identifier

    def rotate(self) -> str:
        """GitHub rotates a new key in: published and current (the older ones stay published)."""
        identifier = self.new_key()
        self.published.append(identifier)
        self.current = identifier
        return identifier

    def document(self) -> dict:
        return {"public_keys": [
            {"key_identifier": identifier, "is_current": identifier == self.current,
             "key": self.private[identifier].public_key().public_bytes(
                 serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()}
            for identifier in self.published]}

    def sign(self, body: bytes, identifier: str | None = None) -> dict[str, str]:
        """The headers GitHub sends with ``body``, signed by ``identifier`` (default: the current key)."""
        identifier = identifier or self.current
        signature = self.private[identifier].sign(body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json", "Github-Public-Key-Identifier": identifier,
                "Github-Public-Key-Signature": base64.b64encode(signature).decode()}
