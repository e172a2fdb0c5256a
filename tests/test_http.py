"""The key API: what it answers, in-process (``api``: one worker's WSGI app, ``bot.server.create_app``,
called as a server would call it), and what only the real server shows (``server``: ``python -m bot``
with two gunicorn workers on a free port, driven with http.client and raw sockets): bodies the
server cannot de-chunk, no cache in any worker, its log, SIGTERM, sockets per worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from freezegun import freeze_time

from bot.config import Settings
from bot.server import create_app
from storage import open_store
from storage.keyformat import generate_secret

from .helpers import ADMIN
from .servers import InProcessApp, http_request, raw_exchange, start_server


def request(target, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
    """``target``: the in-process app or the server process; ``(status, headers, body)``."""
    return target.request(method, path, body, headers)


def verify(target, key) -> tuple[int, dict]:
    status, _, data = request(target, "POST", "/v1/keys/verify", json.dumps({"key": key}),
                              {"Content-Type": "application/json"})
    return status, json.loads(data)


@pytest.fixture
def api(database_url) -> Iterator[InProcessApp]:
    """One worker's WSGI app (Slack off), as ``python -m bot`` builds it, called in-process."""
    open_store(database_url).close()  # the schema, as the server's start leaves it
    app = create_app(Settings(database_url=database_url, admins=(ADMIN,)))
    yield InProcessApp(app)
    app.store.close()


@pytest.fixture
def keys(database_url):
    """A valid key, a revoked key and an expired key, created before the server starts."""
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    valid = store.keys.create(name="billing-api", owner="payments", actor="test")[0]
    revoked = store.keys.create(name="old", owner="payments", actor="test")[0]
    store.keys.revoke(revoked.key.id, via="cli", actor="test", reason="rotation")
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=2)):
        expired = store.keys.create(name="short", owner="growth", actor="test", expires_in=timedelta(hours=1))[0]
    store.close()
    return {"valid": valid, "revoked": revoked, "expired": expired}


def test_health_answers_ok(api):
    status, headers, data = request(api, "GET", "/healthz")
    assert status == 200
    assert json.loads(data)["status"] == "ok"


def test_verify_answers_each_code_as_the_contract_says(api, keys):
    status, body = verify(api, keys["valid"].secret)
    assert status == 200
    assert body == {"valid": True, "code": "VALID", "key_id": keys["valid"].key.id, "name": "billing-api",
                    "owner": "payments", "expires_at": None}

    status, body = verify(api, keys["revoked"].secret)
    assert (status, body) == (200, {"valid": False, "code": "REVOKED", "key_id": keys["revoked"].key.id})

    # The expired key was created two days ago with a one-hour lifetime.
    deadline = keys["expired"].key.expires_at
    status, body = verify(api, keys["expired"].secret)
    assert status == 200 and body["code"] == "EXPIRED" and body["valid"] is False
    assert body["key_id"] == keys["expired"].key.id and "name" not in body and "owner" not in body
    assert body["expires_at"] == deadline.strftime("%Y-%m-%dT%H:%M:%SZ")

    assert verify(api, generate_secret()) == (200, {"valid": False, "code": "NOT_FOUND"})
    assert verify(api, "not-a-key") == (200, {"valid": False, "code": "MALFORMED"})
    typo = keys["valid"].secret[:-1] + ("A" if keys["valid"].secret[-1] != "A" else "B")
    assert verify(api, typo) == (200, {"valid": False, "code": "MALFORMED"})


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'"apk"', b'{"key": 5}', b'{"key": null}', b'{"secret": "x"}', b"\xff\xfe"],
)
def test_verify_rejects_bad_bodies_with_400_json(api, body):
    status, headers, data = request(api, "POST", "/v1/keys/verify", body, {"Content-Type": "application/json"})
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert "key" in json.loads(data)["error"]


def test_verify_refuses_oversized_bodies(api):
    status, _, data = request(api, "POST", "/v1/keys/verify", b'{"key": "' + b"a" * 100_000 + b'"}')
    assert status == 413
    assert "larger" in json.loads(data)["error"]


def test_verify_needs_post(api):
    status, headers, _ = request(api, "GET", "/v1/keys/verify")
    assert status == 405
    assert headers["Allow"] == "POST"


VERIFY_HEAD = b"POST /v1/keys/verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"
# Bodies that are not well-formed HTTP: under gunicorn each one was answered 500 (gunicorn raised
# while the app read wsgi.input), or, for the short body, answered as if it had all arrived.
UNREADABLE_BODIES = {
    "a chunk size that is not hex": CHUNKED + b'zz\r\n{"key": "x"}\r\n0\r\n\r\n',
    "a chunk cut short": CHUNKED + b'40\r\n{"key": "apk_',
    "a chunk without its CRLF": CHUNKED + b'c\r\n{"key": "x"}XX0\r\n\r\n',
    "no end after the last chunk": CHUNKED + b'c\r\n{"key": "x"}\r\n0\r\n',
    "a malformed chunk extension": CHUNKED + b'c;\x01\r\n{"key": "x"}\r\n0\r\n\r\n',
    "a chunk size line that never ends": CHUNKED + b"1" * 10_000,
    "a body shorter than its Content-Length": b'Content-Length: 100\r\n\r\n{"key": "x"}',
}


# What granian's HTTP parser (hyper) makes of each: refused (400 JSON from our app, which reads a
# body the server reports as broken), read leniently (hyper ignores chunk extensions and a missing
# CRLF after a chunk: our app then answers the body it got), or not yet a whole request (the body
# has not all arrived: the server waits for the rest, in Rust, holding no Python thread, and the
# client gives up). Never a 5xx, never a traceback, and the server keeps serving.
BODY_OUTCOMES = {
    "a chunk size that is not hex": {"400"},
    "a chunk cut short": {"400", "waits"},
    "a chunk without its CRLF": {"400", "200"},
    "no end after the last chunk": {"400", "200", "waits"},
    "a malformed chunk extension": {"400", "200", "closed"},
    "a chunk size line that never ends": {"400"},
    "a body shorter than its Content-Length": {"400", "waits"},
}


def test_verify_never_fails_on_a_body_it_cannot_read_and_keeps_serving(server, keys):
    wrong = {}
    for what, rest in UNREADABLE_BODIES.items():
        try:
            status, headers, data = raw_exchange(server.url, VERIFY_HEAD + rest, wait=2)
        except (http.client.RemoteDisconnected, ConnectionResetError):
            outcome = "closed"
        except TimeoutError:
            outcome = "waits"
        else:
            outcome = str(status)
            if status == 400 and (headers.get("content-type") != "application/json"
                                  or not isinstance(json.loads(data).get("error"), str)):
                outcome = f"400 without a JSON error: {data[:80]!r}"
        if outcome not in BODY_OUTCOMES[what]:
            wrong[what] = outcome
    assert wrong == {}
    # A well-formed chunked body is read like any other, and the server keeps serving.
    body = json.dumps({"key": keys["valid"].secret}).encode()
    status, _, data = raw_exchange(server.url, VERIFY_HEAD + CHUNKED + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert (status, json.loads(data)["code"]) == (200, "VALID")
    assert verify(server, keys["valid"].secret)[1]["code"] == "VALID"
    assert "Traceback" not in server.log()


def test_auth_accepts_bearer_and_x_api_key(api, keys):
    valid = keys["valid"]
    for headers in ({"Authorization": f"Bearer {valid.secret}"}, {"X-API-Key": valid.secret}):
        status, resp_headers, data = request(api, "GET", "/v1/auth", headers=headers)
        assert status == 204 and data == b""
        assert resp_headers["X-Key-Id"] == valid.key.id
        assert resp_headers["X-Key-Owner"] == "payments"


@pytest.mark.parametrize("which,code", [("revoked", "REVOKED"), ("expired", "EXPIRED")])
def test_auth_refuses_known_bad_keys_with_401(api, keys, which, code):
    status, headers, data = request(api, "GET", "/v1/auth", headers={"X-API-Key": keys[which].secret})
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(data)["code"] == code
    assert "X-Key-Id" not in headers


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "MALFORMED"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "MALFORMED"),
        ({"Authorization": "Bearer "}, "MALFORMED"),
        ({"Authorization": "Bearer garbage"}, "MALFORMED"),
        ({"X-API-Key": "apk_short"}, "MALFORMED"),
    ],
)
def test_auth_refuses_missing_or_malformed_keys(api, headers, code):
    status, resp_headers, data = request(api, "GET", "/v1/auth", headers=headers)
    assert status == 401
    assert resp_headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(data)["code"] == code
    if not headers:  # nothing presented: the answer says how to present a key
        assert "no API key" in json.loads(data)["error"]


@pytest.mark.parametrize("scheme", ["Basic", "Token", "ApiKey", "Digest"])
def test_auth_takes_a_valid_key_only_from_bearer_or_x_api_key(api, keys, scheme):
    """A valid key under another scheme is not accepted (a proxy or client that puts it in Basic is
    misconfigured, and a log or cache treats Basic credentials differently)."""
    status, resp_headers, data = request(api, "GET", "/v1/auth",
                                         headers={"Authorization": f"{scheme} {keys['valid'].secret}"})
    assert status == 401 and json.loads(data)["code"] == "MALFORMED"
    assert "X-Key-Id" not in resp_headers


def test_auth_refuses_unknown_key(api):
    status, _, data = request(api, "GET", "/v1/auth", headers={"Authorization": f"Bearer {generate_secret()}"})
    assert status == 401 and json.loads(data) == {"code": "NOT_FOUND"}


def test_auth_works_for_envoy_style_paths_and_methods(api, keys):
    status, headers, _ = request(api, "POST", "/v1/auth/orders/42", headers={"X-API-Key": keys["valid"].secret})
    assert status == 204 and headers["X-Key-Id"] == keys["valid"].key.id


def test_revocation_through_the_cli_is_refused_by_the_running_server_at_once(server, keys, run_cli):
    valid = keys["valid"]
    assert request(server, "GET", "/v1/auth", headers={"X-API-Key": valid.secret})[0] == 204
    assert run_cli("revoke", valid.key.id, "--actor", "oncall@example.com", "--reason", "compromised").code == 0
    # Every worker refuses on the very next request: no cache anywhere.
    for _ in range(10):
        status, _, data = request(server, "GET", "/v1/auth", headers={"X-API-Key": valid.secret})
        assert status == 401 and json.loads(data)["code"] == "REVOKED"


def test_unknown_route_is_404_json(api):
    status, headers, data = request(api, "GET", "/nope")
    assert status == 404 and "error" in json.loads(data)


def test_slack_route_says_slack_is_off_without_settings(api):
    status, _, data = request(api, "POST", "/slack/events", b"token=x")
    assert status == 404
    assert "Slack is off" in json.loads(data)["error"]


def test_server_logs_one_line_saying_slack_is_off_and_never_a_secret(server, keys):
    verify(server, keys["valid"].secret)
    verify(server, keys["revoked"].secret)
    request(server, "GET", "/v1/auth", headers={"Authorization": f"Bearer {keys['valid'].secret}"})
    request(server, "POST", "/v1/keys/verify", json.dumps({"key": keys["valid"].secret + "x"}))
    server.stop()
    log = server.log()
    assert sum("Slack is off" in line for line in log.splitlines()) == 1
    for created in keys.values():
        assert created.secret not in log
        assert created.secret[4:] not in log
    assert "event=verify code=VALID key_id=" + keys["valid"].key.id in log


def test_health_is_503_when_the_database_answers_but_is_not_a_key_store(store, tmp_path):
    """A database that opens but holds no key store (an empty file, another application's, a
    restore gone wrong) is not healthy: health reads a row of the schema, on the verification path."""
    from bot.api import KeyApiApp
    from storage.db import Database

    (tmp_path / "empty.db").write_bytes(b"")
    store.db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    captured = {}

    def start_response(status, headers):
        captured["status"] = status

    body = b"".join(KeyApiApp(store)({"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET"}, start_response))
    assert captured["status"].startswith("503"), body
    assert json.loads(body)["database"] == "unreachable"


def test_health_is_503_when_the_database_does_not_answer(store, tmp_path):
    """In-process WSGI call: the store's engines point at a database that cannot be opened."""
    from bot.api import KeyApiApp
    from storage.db import Database

    store.db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    captured = {}

    def start_response(status, headers):
        captured["status"] = status

    body = b"".join(KeyApiApp(store)({"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET"}, start_response))
    assert captured["status"].startswith("503")
    assert json.loads(body)["database"] == "unreachable"


def test_sigterm_finishes_in_flight_requests_and_exits_zero(server, keys):
    results = []

    def hammer():
        for _ in range(200):
            try:
                results.append(verify(server, keys["valid"].secret)[1]["code"])
            except (OSError, http.client.HTTPException):
                return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    while len(results) < 20:
        time.sleep(0.01)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    for t in threads:
        t.join()
    assert code == 0
    assert elapsed < 10
    # Every answer that came back is a complete, correct one (no half-written responses).
    assert set(results) == {"VALID"}


def test_server_refuses_to_start_with_half_a_slack_configuration(database_url, tmp_path):
    with pytest.raises(RuntimeError) as excinfo:
        start_server(database_url, tmp_path, {"SLACK_BOT_TOKEN": "xoxb-test"})
    assert "SLACK_SIGNING_SECRET" in str(excinfo.value)


def test_server_and_cli_write_at_the_same_time_without_lock_errors(server, keys, database_url):
    """Verifications (which record last use) and CLI creations run concurrently."""
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    errors: list[str] = []

    def creator(n):
        for i in range(5):
            out = subprocess.run([sys.executable, "-m", "bot.cli", "create", "--name", f"c{n}-{i}", "--owner", "load"],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                errors.append(out.stderr)

    def verifier():
        for _ in range(50):
            status, body = verify(server, keys["valid"].secret)
            if status != 200 or body["code"] != "VALID":
                errors.append(str(body))

    threads = [threading.Thread(target=creator, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=verifier) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = open_store(database_url)
    assert store.keys.count_keys(owner="load") == 15
    assert store.audit.verify() is None
    store.close()
    assert "locked" not in server.log()


def _worker_pids(server) -> list[int]:
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _tcp_sockets_on_port(port: int) -> dict[int, str]:
    """Socket inode -> TCP state ("01" established, "0A" listening) for local port ``port``."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            found[int(fields[9])] = fields[3]
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-worker sockets are Linux's")


@LINUX_ONLY
def test_keep_alive_connections_are_spread_across_workers(server, keys):
    """A burst of keep-alive connections (a proxy's pool, a load test) must not pile onto one worker
    while the other idles: both workers accept from the one listening socket and each gets its share."""
    port = urlsplit(server.url).port
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # /healthz answers as soon as the first worker is up; wait for both
        if len(_worker_pids(server)) == 2 and all(_socket_inodes(pid) for pid in _worker_pids(server)):
            break
        time.sleep(0.05)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(32)]
    try:
        for conn in connections:
            conn.connect()
        for conn in connections:
            conn.request("POST", "/v1/keys/verify", json.dumps({"key": keys["valid"].secret}),
                         {"Content-Type": "application/json"})
            assert json.loads(conn.getresponse().read())["code"] == "VALID"
        sockets = _tcp_sockets_on_port(port)
        per_worker = {}
        for pid in _worker_pids(server):
            mine = _socket_inodes(pid) & sockets.keys()
            per_worker[pid] = ([i for i in mine if sockets[i] == "0A"], [i for i in mine if sockets[i] == "01"])
        assert len(per_worker) == 2
        served = sorted(len(established) for _, established in per_worker.values())
        assert sum(served) == 32
        assert served[0] >= 4, f"connections per worker: {served}"  # all but one on one worker has odds of 1 in 10^6
    finally:
        for conn in connections:
            conn.close()


@LINUX_ONLY
def test_a_second_server_on_the_same_port_is_refused_and_the_first_keeps_serving(server, keys, database_url, tmp_path):
    port = urlsplit(server.url).port
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(DATABASE_URL=database_url, HOST="127.0.0.1", PORT=str(port))
    second = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 2
    assert f"cannot start: 127.0.0.1:{port} is already in use" in second.stderr
    assert "Traceback" not in second.stderr
    for _ in range(20):  # the first server still answers every request itself
        status, body = verify(server, keys["valid"].secret)
        assert (status, body["code"]) == (200, "VALID")


def test_a_stopping_server_refuses_new_connections_while_it_drains(database_url, tmp_path, keys):
    """While a worker drains after SIGTERM it no longer listens: a new connection is refused at once
    (a proxy retries elsewhere) instead of queueing on a socket nobody will accept from."""
    srv = start_server(database_url, tmp_path, {"WEB_CONCURRENCY": "1"})
    port = urlsplit(srv.url).port
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # kept alive: the worker lingers for it
    try:
        idle.request("GET", "/healthz")
        assert idle.getresponse().read()
        srv.proc.send_signal(signal.SIGTERM)
        refused = False
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not refused:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    time.sleep(0.02)
            except ConnectionRefusedError:
                refused = srv.proc.poll() is None  # refused while the server is still draining
        assert refused
        assert srv.proc.wait(timeout=10) == 0
    finally:
        idle.close()
        srv.stop()


@LINUX_ONLY
def test_socket_mode_runs_in_a_process_beside_the_workers_and_stops_with_them(database_url, tmp_path):
    """With SLACK_APP_TOKEN the server holds Slack's WebSocket in one process of its own. Here Slack
    cannot be reached: that process says so in one line and keeps trying, the key API serves, and
    SIGTERM stops everything, exit 0."""
    env = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test", "APIKEYS_AUDIT_CHANNEL": "C0AUDIT",
           "SLACK_API_URL": "http://127.0.0.1:9/api/"}  # nothing listens on port 9
    server = start_server(database_url, tmp_path, env)
    try:
        deadline = time.monotonic() + 20
        while "Socket Mode could not connect" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        children = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _worker_pids(server)}
        socket_mode = [pid for pid, cmd in children.items() if b"multiprocessing.spawn" in cmd]
        workers = [pid for pid, cmd in children.items() if cmd.split(b"\0")[1:3] == [b"-m", b"bot"]]
        assert len(socket_mode) == 1 and len(workers) == 2, children
        assert http_request(server.url, "GET", "/healthz")[0] == 200
    finally:
        assert server.stop() == 0
    for pid in [*socket_mode, *workers]:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
    log = server.log()
    assert "Socket Mode could not connect: cannot reach http://127.0.0.1:9/api/ (URLError" in log and "Traceback" not in log
