"""The playground is a local demo, not a back door: its JSON API takes only same-origin JSON, it
listens on 127.0.0.1 unless told otherwise, it will not start on a database it did not seed, and
the production server (``python -m bot``) can never be turned into it.

Real processes, real HTTP. No browser needed (tests/test_playground.py drives the page itself)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage import open_store

from .helpers import ROOT, free_port
from .servers import Headers

ADMIN = "UADMIN001"
INTRUDER = "UEVIL0001"
ADD_INTRUDER = {"user": ADMIN, "channel": "C0INCIDENT", "command": "/apikeys", "text": f"admins add <@{INTRUDER}|eve>"}
STARTUP = 60  # seconds: an upper bound for a process to start or exit, never a timing assertion


@dataclass
class Process:
    proc: subprocess.Popen
    port: int
    database_url: str = ""
    lines: list[str] = field(default_factory=list)
    seen: queue.Queue = field(default_factory=queue.Queue)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str) -> None:
        """Block until a line of the process's output matches ``pattern`` (or it exits)."""
        deadline = time.monotonic() + STARTUP
        while True:
            try:
                line = self.seen.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}:\n{self.output()}") from None
            if line is None:
                raise AssertionError(f"exited with {self.proc.wait()} before {pattern!r}:\n{self.output()}")
            if re.search(pattern, line):
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "APIKEYS_")) and k not in ("HOST", "PORT", "DATABASE_URL")}
    env.update({"DATABASE_URL": database_url, "PYTHONPATH": str(ROOT), **extra})
    return env


def launch(argv: list[str], env: dict[str, str], cwd: Path, port: int) -> Process:
    proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    started = Process(proc, port)

    def read() -> None:
        for line in proc.stdout:
            started.lines.append(line)
            started.seen.put(line)
        started.seen.put(None)

    threading.Thread(target=read, daemon=True).start()
    return started


def serving(started: Process) -> Process:
    """Wait until the server listens: granian logs "Listening at" once its socket is bound; a
    connection made after that waits in the backlog until the worker has loaded the app."""
    try:
        started.wait_for_line(r"Listening at: ")
        deadline = time.monotonic() + STARTUP
        while True:  # the bind follows the log line at once: a refused connect is retried immediately
            try:
                socket.create_connection(("127.0.0.1", started.port), timeout=STARTUP).close()
                return started
            except ConnectionRefusedError:
                if started.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"never listened on {started.port}:\n{started.output()}") from None
    except BaseException:
        started.stop()
        raise


def start_playground(database_url: str, cwd: Path, *args: str, **env: str) -> Process:
    port = free_port()
    return serving(launch(["-m", "bot.cli", "playground", "--port", str(port), *args],
                          _env(database_url, **env), cwd, port))


@pytest.fixture
def playground(database_url, tmp_path):
    """A playground of the test's own, for a test that changes something through it."""
    started = start_playground(database_url, tmp_path)
    started.database_url = database_url
    yield started
    started.stop()


@pytest.fixture(scope="module")
def shared(module_database_url, tmp_path_factory):
    """One playground for the tests that change nothing through it (each one checks that its own
    requests left the database as it found it), started once for the module."""
    started = start_playground(module_database_url, tmp_path_factory.mktemp("playground"))
    started.database_url = module_database_url
    yield started
    started.stop()


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
        return resp.status, data, Headers(resp.getheaders())
    finally:
        conn.close()


def snapshot(database_url: str):
    """Everything a request through the playground could change: admins, keys, the audit log."""
    store = open_store(database_url, create_schema=False)
    try:
        return ([(a.user_id, a.source) for a in store.admins.list()],
                [(k.id, k.created_by, k.revoked_at) for k in store.keys.list_keys(status="all", limit=500).items],
                [e.id for e in store.audit.oldest_first()])
    finally:
        store.close()


def stored_admins(database_url: str) -> list[str]:
    store = open_store(database_url, create_schema=False)
    try:
        return [a.user_id for a in store.admins.list() if a.source == "stored"]
    finally:
        store.close()


# -- 1. only same-origin JSON ---------------------------------------------------------------------
def test_a_cross_origin_text_plain_form_post_cannot_add_an_admin(shared):
    """What any web page can make a visitor's browser send without a CORS preflight."""
    before = snapshot(shared.database_url)
    status, data, _ = call(shared.port, "POST", "/playground/api/command", json.dumps(ADD_INTRUDER).encode(),
                           {"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://evil.example",
                            "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
    assert status == 403, (status, data)
    assert data["ok"] is False and data["error"].startswith("refused")
    assert INTRUDER not in stored_admins(shared.database_url)
    assert snapshot(shared.database_url) == before


def test_a_text_plain_post_without_an_origin_is_refused_with_415(shared):
    before = snapshot(shared.database_url)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/jsonp", None):
        headers = {"Content-Type": content_type} if content_type else {}
        status, data, _ = call(shared.port, "POST", "/playground/api/command",
                               json.dumps(ADD_INTRUDER).encode(), headers)
        assert status == 415, (content_type, status, data)
        assert data["ok"] is False and "application/json" in data["error"]
    assert snapshot(shared.database_url) == before


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "{self}", "Sec-Fetch-Site": "cross-site"},
], ids=["foreign-origin", "null-origin", "other-port", "cross-site", "same-site", "own-origin-but-cross-site"])
def test_a_json_post_from_another_origin_is_refused(shared, headers):
    headers = {k: v.replace("{self}", f"http://127.0.0.1:{shared.port}") for k, v in headers.items()}
    before = snapshot(shared.database_url)
    status, data, _ = call(shared.port, "POST", "/playground/api/command", json.dumps(ADD_INTRUDER).encode(),
                           {"Content-Type": "application/json", **headers})
    assert status == 403, (status, data)
    assert data["ok"] is False and data["error"]
    assert snapshot(shared.database_url) == before


def test_a_dns_rebinding_host_is_refused(shared):
    """A page on evil.example whose name now resolves to 127.0.0.1 is "same-origin" with itself."""
    evil = f"evil.example:{shared.port}"
    before = snapshot(shared.database_url)
    status, data, _ = call(shared.port, "POST", "/playground/api/command", json.dumps(ADD_INTRUDER).encode(),
                           {"Content-Type": "application/json", "Host": evil, "Origin": f"http://{evil}",
                            "Sec-Fetch-Site": "same-origin"})
    assert status == 403, (status, data)
    assert "host" in data["error"].lower()
    assert snapshot(shared.database_url) == before


def test_the_state_is_not_readable_from_another_origin(shared):
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Host": f"evil.example:{shared.port}"}):
        status, data, _ = call(shared.port, "GET", "/playground/api/state?user=UADMIN001", headers=headers)
        assert status == 403, (headers, status, data)
        assert "messages" not in data
    status, data, _ = call(shared.port, "GET", "/playground/api/state?user=UADMIN001",
                           headers={"Sec-Fetch-Site": "same-origin"})
    assert status == 200 and "messages" in data


def test_a_same_origin_json_post_works(playground, database_url):
    """What the page itself sends (fetch with a JSON body from /playground)."""
    own = f"127.0.0.1:{playground.port}"
    for headers in ({"Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"},
                    {"Origin": f"http://localhost:{playground.port}", "Host": f"localhost:{playground.port}"},
                    {"Sec-Fetch-Site": "none"}, {}):
        status, data, _ = call(playground.port, "POST", "/playground/api/command",
                               json.dumps({**ADD_INTRUDER, "text": "help"}).encode(),
                               {"Content-Type": "application/json; charset=utf-8", **headers})
        assert status == 200 and data["ok"] is True, (headers, status, data)
    status, data, _ = call(playground.port, "POST", "/playground/api/command", json.dumps(ADD_INTRUDER).encode(),
                           {"Content-Type": "application/json", "Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and data["ok"] is True, data
    assert INTRUDER in stored_admins(database_url)


def test_the_page_sends_json_and_cannot_be_framed_by_another_site(shared):
    status, page, headers = call(shared.port, "GET", "/playground")
    assert status == 200
    assert headers.get("X-Frame-Options") == "DENY"
    policy = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in policy
    # Only the page's own script runs (by hash): no inline handler, no script from a message.
    import base64
    import hashlib

    script = re.search(rb"<script>(.*?)</script>", page, re.DOTALL).group(1)
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"
    posts = re.findall(rb"fetch\([^;]*method:\s*\"POST\"[^;]*", page)
    assert posts and all(b'"Content-Type": "application/json"' in p and b"JSON.stringify" in p for p in posts)


def test_a_click_with_a_malformed_state_is_400(shared):
    status, data, _ = call(shared.port, "POST", "/playground/api/command",
                           json.dumps({**ADD_INTRUDER, "text": "help"}).encode(), {"Content-Type": "application/json"})
    assert status == 200, data
    message = call(shared.port, "GET", "/playground/api/state?user=UADMIN001")[1]["messages"][-1]
    before = snapshot(shared.database_url)
    for state in ([1], {"b": [1]}, "x", {"b": {"a": 5}}):
        status, data, _ = call(shared.port, "POST", "/playground/api/click",
                               json.dumps({"user": ADMIN, "message_id": message["id"], "action_id": "noop",
                                           "state": state}).encode(), {"Content-Type": "application/json"})
        assert status == 400 and "state" in data["error"], (state, status, data)
    assert snapshot(shared.database_url) == before


def test_the_host_names_it_answers_under():
    """Unit level: an address literal, localhost, this machine's name and --host; no other name."""
    from bot.playground.app import PlaygroundApp

    class Conversation:
        def state(self, user):
            return {"ok": True, "user": user}

    app = PlaygroundApp(None, Conversation(), host="apikeys-demo.internal")

    def status(host, **headers):
        seen = []
        environ = {"PATH_INFO": "/playground/api/state", "REQUEST_METHOD": "GET", "HTTP_HOST": host,
                   "wsgi.url_scheme": "http", **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
        app(environ, lambda code, _headers: seen.append(code))
        return int(seen[0].split()[0])

    for host in ("127.0.0.1:3000", "[::1]:3000", "10.1.2.3", "localhost:3000", "demo.localhost:3000",
                 "APIKEYS-DEMO.internal:3000", socket.gethostname()):
        assert status(host) == 200, host
        assert status(host, origin=f"http://{host}") == 200, host
    for host in ("evil.example:3000", "apikeys-demo.internal.evil.example", "", "a b", "x@127.0.0.1"):
        assert status(host) == 403, host
    assert status("127.0.0.1:3000", origin="http://127.0.0.1:3000/path") == 403
    assert status("127.0.0.1", origin="http://127.0.0.1:80") == 200
    assert status("127.0.0.1", origin="https://127.0.0.1") == 403


@pytest.mark.parametrize("method,path,body,headers,status", [
    ("POST", "/playground/api/command", b"[1, 2]", {}, 400),
    ("POST", "/playground/api/command", b"not json", {}, 400),
    ("POST", "/playground/api/command", b"\xff\xfe", {}, 400),
    ("POST", "/playground/api/click", json.dumps({"user": ADMIN, "message_id": 1, "state": [1]}).encode(), {}, 400),
    ("POST", "/playground/api/nothing", json.dumps({"user": ADMIN}).encode(), {}, 404),
    ("POST", "/playground/api/state", json.dumps({"user": ADMIN}).encode(), {}, 405),
    ("GET", "/playground/api/command", None, {}, 405),
    ("PUT", "/playground/api/command", json.dumps(ADD_INTRUDER).encode(), {}, 405),
])
def test_bad_requests_get_a_clear_json_error_and_change_nothing(shared, method, path, body, headers, status):
    before = snapshot(shared.database_url)
    got, data, _ = call(shared.port, method, path, body, {"Content-Type": "application/json", **headers})
    assert got == status, (got, data)
    assert isinstance(data, dict) and data["ok"] is False and data["error"]
    assert snapshot(shared.database_url) == before


@pytest.mark.parametrize("api, field", [
    ("command", "channel"), ("command", "command"), ("command", "text"), ("say", "channel"), ("say", "text"),
    ("click", "message_id"), ("click", "action_id"), ("click", "block_id"), ("click", "value"),
])
@pytest.mark.parametrize("value", [None, 7, True, [], {"a": 1}, "C0NOWHERE"], ids=repr)
def test_a_field_of_the_wrong_type_or_an_unknown_channel_is_400_never_500(shared, api, field, value):
    """Each field of the page's API is checked: a clear JSON 400, nothing sent to the bot, nothing changed
    (a channel that was not a string was a 500 with a traceback)."""
    if value == "C0NOWHERE" and field != "channel":
        pytest.skip("only a channel names something that must exist")
    if value is None and field in ("value", "text", "block_id", "channel"):
        pytest.skip("optional: null means absent")
    if value == 7 and field == "message_id":
        pytest.skip("a number is a message id")
    body = {"user": ADMIN, "channel": "C0INCIDENT", "command": "/apikeys", "text": "help", "message_id": 1,
            "action_id": "noop", "block_id": "b", "value": "v"}
    body[field] = value
    before = snapshot(shared.database_url)
    status, data, _ = call(shared.port, "POST", f"/playground/api/{api}", json.dumps(body).encode(),
                           {"Content-Type": "application/json"})
    assert status == 400, (status, data)
    assert isinstance(data, dict) and data["ok"] is False and field in data["error"], data
    assert snapshot(shared.database_url) == before
    assert "Traceback" not in shared.output()


# -- 2. where it listens, and which database it accepts ----------------------------------------------
def _listening(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (Linux /proc/net/tcp*)."""
    found = set()
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc/net")


@needs_proc
def test_it_listens_on_loopback_even_with_host_in_the_environment_and_dotenv(database_url, tmp_path):
    (tmp_path / ".env").write_text("HOST=0.0.0.0\nPORT=1\n")
    started = start_playground(database_url, tmp_path, HOST="0.0.0.0")
    try:
        assert _listening(started.port) == {"127.0.0.1"}
    finally:
        started.stop()


@needs_proc
def test_an_explicit_host_wins(database_url, tmp_path):
    started = start_playground(database_url, tmp_path, "--host", "0.0.0.0", HOST="127.0.0.1")
    try:
        assert _listening(started.port) == {"0.0.0.0"}
        # Reached by an address, as from another machine; the page and its API still work.
        status, data, _ = call(started.port, "POST", "/playground/api/command",
                               json.dumps({**ADD_INTRUDER, "text": "help"}).encode(),
                               {"Content-Type": "application/json", "Host": f"192.0.2.7:{started.port}",
                                "Origin": f"http://192.0.2.7:{started.port}", "Sec-Fetch-Site": "same-origin"})
        assert status == 200 and data["ok"] is True, data
    finally:
        started.stop()


def _run_to_exit(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    port = free_port()
    try:
        return subprocess.run([sys.executable, "-m", "bot.cli", "playground", "--port", str(port), *args],
                              cwd=cwd, env=_env(database_url), capture_output=True, text=True, timeout=STARTUP)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the playground started instead of refusing:\n{exc.stdout}{exc.stderr}") from None


def test_it_refuses_a_database_with_keys_it_did_not_seed(database_url, tmp_path):
    store = open_store(database_url)
    store.keys.create(name="billing", owner="payments", actor="cli:alice")
    store.close()
    before = snapshot(database_url)
    done = _run_to_exit(database_url, tmp_path)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--allow-existing-database" in lines[0] and "1 key" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert snapshot(database_url) == before  # no demo keys, no audit entries


@pytest.mark.parametrize("prepare, named", [
    (lambda store: store.admins.add("UREAL0001", actor="cli:alice"), "1 admin"),
    (lambda store: store.audit.record(__import__("storage").EventInput(actor="cli:alice", action="admin.added",
                                                                       details={"user_id": "UREAL0001"})),
     "1 audit entry"),
], ids=["admins-but-no-key", "an-audit-log-but-no-key"])
def test_it_refuses_a_real_installation_that_has_no_key_yet(database_url, tmp_path, prepare, named):
    """Admins and an audit log but no key: the playground would have seeded demo keys into it and
    signed its log with a throw-away key (breaking a pinned 'audit --verify' for ever)."""
    store = open_store(database_url)
    prepare(store)
    store.close()
    before = snapshot(database_url)
    done = _run_to_exit(database_url, tmp_path)
    assert done.returncode == 2, done
    assert named in done.stderr and "--allow-existing-database" in done.stderr
    assert snapshot(database_url) == before


def table_rows(database_url: str) -> dict[str, int]:
    """Every table of the database and its number of rows (without migrating anything)."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {table: conn.execute(text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one()
                    for table in inspect(conn).get_table_names()}
    finally:
        engine.dispose()


def _receipt_only(database_url: str) -> None:
    store = open_store(database_url)
    store.receipts.first_use("command|T0REAL|UREAL0001")  # a real installation's handled /apikeys
    store.close()


def _another_applications_table(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)"))
        conn.execute(text("INSERT INTO invoices (id, total) VALUES (1, 100), (2, 250)"))
    engine.dispose()


@pytest.mark.parametrize("prepare, named", [
    (_receipt_only, "1 receipt"),
    (_another_applications_table, "2 rows in invoices"),
], ids=["a-receipt-only", "another-applications-table"])
def test_it_refuses_a_database_holding_rows_of_any_kind(database_url, tmp_path, prepare, named):
    """Not only keys, admins and audit entries: any row the playground did not make (here a receipt of
    a real installation, or DATABASE_URL naming another application's database) is refused, and the
    database is left exactly as it was (no schema migrated into it, no demo keys)."""
    prepare(database_url)
    before = table_rows(database_url)
    done = _run_to_exit(database_url, tmp_path)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert "--allow-existing-database" in lines[0] and "unset DATABASE_URL" in lines[0]
    assert table_rows(database_url) == before


def test_a_database_that_was_only_migrated_counts_as_empty(database_url, tmp_path):
    """'apikeys db upgrade' on a new database writes only what the migrations write (the log's genesis
    head, alembic's version): nothing anyone made, so the playground seeds it and marks it as its own."""
    open_store(database_url).close()
    started = start_playground(database_url, tmp_path)
    started.stop()
    rows = table_rows(database_url)
    assert rows["api_keys"] == 12
    again = start_playground(database_url, tmp_path)  # its own now
    again.stop()


def test_allow_existing_database_never_seeds_an_installation_without_keys(database_url, tmp_path):
    """Allowed onto a real installation that has admins but no key yet, the playground adds no demo keys
    to it, and does not mark it as its own: without the flag it is refused again."""
    store = open_store(database_url)
    store.admins.add("UREAL0001", actor="cli:alice")
    store.close()
    started = start_playground(database_url, tmp_path, "--allow-existing-database")
    try:
        assert call(started.port, "GET", "/playground")[0] == 200
    finally:
        started.stop()
    assert table_rows(database_url)["api_keys"] == 0
    assert table_rows(database_url)["receipts"] == 0  # no playground mark
    done = _run_to_exit(database_url, tmp_path)
    assert done.returncode == 2 and "1 admin" in done.stderr, done


def test_allow_existing_database_starts_on_it_and_seeds_nothing(database_url, tmp_path):
    store = open_store(database_url)
    store.keys.create(name="billing", owner="payments", actor="cli:alice")
    store.close()
    before = snapshot(database_url)
    started = start_playground(database_url, tmp_path, "--allow-existing-database")
    try:
        status, _, _ = call(started.port, "GET", "/playground")
        assert status == 200
        assert snapshot(database_url) == before
    finally:
        started.stop()


def test_it_starts_again_on_its_own_database(database_url, tmp_path):
    first = start_playground(database_url, tmp_path)
    first.stop()
    store = open_store(database_url)
    seeded = store.keys.count_keys(status="all")
    store.close()
    assert seeded == 12
    again = start_playground(database_url, tmp_path)
    try:
        assert call(again.port, "GET", "/playground")[0] == 200
    finally:
        again.stop()


_RUN_WITHOUT_SERVING = """
import json, os
import bot.server
captured = {}
bot.server.run_server = lambda settings, wrap=None: captured.update(settings=settings, wrap=wrap) or 0
from bot.playground import app
code = app.main(["--port", "3999"])
settings = captured["settings"]
page = captured["wrap"](lambda environ, start_response: [], settings)
stub = page.conversation.stub
try:
    shown = page.page.decode() + json.dumps(page.conversation.state("UADMIN001"))
    print(json.dumps({"code": code, "token": settings.slack_bot_token, "stub_token": stub.bot_token,
                      "secret": settings.slack_signing_secret, "shown": shown,
                      "environment": sorted(k for k in os.environ if k.startswith(("SLACK_", "APIKEYS_")))}))
finally:
    stub.stop()
"""


def test_the_bot_token_is_made_for_the_run_and_handed_only_to_the_server(database_url, tmp_path):
    """A token no page can know (secrets.token_urlsafe, new for every run, not the well-known
    xoxb-playground), given to the server's settings and the stand-in, not to the process environment
    (every child process would inherit it) and never to the page."""
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_SERVING], cwd=tmp_path, env=_env(database_url),
                              capture_output=True, text=True, timeout=STARTUP)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for run in runs:
        assert run["code"] == 0
        assert re.fullmatch(r"xoxb-[A-Za-z0-9_-]{43,}", run["token"]), run["token"]
        assert "playground" not in run["token"]
        assert run["stub_token"] == run["token"]
        assert run["environment"] == [], run["environment"]
        assert run["token"] not in run["shown"] and run["secret"] not in run["shown"]
    assert runs[0]["token"] != runs[1]["token"] and runs[0]["secret"] != runs[1]["secret"]


@pytest.mark.parametrize("args", [["--host", ""], ["--host", " "], ["--port", "0"], ["--port", "70000"]])
def test_a_bad_host_or_port_is_one_line_and_exit_2(database_url, tmp_path, args):
    """An empty --host would fall back to HOST's default, 0.0.0.0: every interface."""
    done = subprocess.run([sys.executable, "-m", "bot.cli", "playground", *args], cwd=tmp_path,
                          env=_env(database_url), capture_output=True, text=True, timeout=STARTUP)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1 and args[0] in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_database_url_is_one_line_and_exit_2(tmp_path):
    done = _run_to_exit("nosuchdb://x", tmp_path)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1 and "database" in done.stderr, done.stderr


# -- 3. the production server never becomes the playground --------------------------------------------
def test_the_server_with_the_old_playground_variable_serves_no_playground(database_url, tmp_path):
    port = free_port()
    env = _env(database_url, HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1",
               APIKEYS_PLAYGROUND_STUB_PORT=str(free_port()))
    started = serving(launch(["-m", "bot"], env, tmp_path, port))
    try:
        assert call(port, "GET", "/healthz")[0] == 200
        assert call(port, "GET", "/playground")[0] == 404
        status, _, _ = call(port, "POST", "/playground/api/command", json.dumps(ADD_INTRUDER).encode(),
                            {"Content-Type": "application/json"})
        assert status == 404
        assert INTRUDER not in stored_admins(database_url)
    finally:
        started.stop()


# That no production module imports the playground, directly or through another module, is an
# import-linter contract (pyproject.toml, run by tests/test_lint.py and .ci/run).


def test_importing_the_server_loads_no_playground_code():
    code = ("import sys, bot.server, bot.api, bot.slack.app, bot.slack.socket; "
            "print(sorted(m for m in sys.modules if m.startswith('bot.playground')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=STARTUP)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
