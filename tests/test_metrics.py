"""``GET /metrics``: Prometheus text that prometheus-client's own parser reads, counts that add up
across the server's two workers, what is read from the key store at scrape time (the outbox,
revocations by channel, denials, leaks, the database's health), and ``METRICS_PORT``."""

from __future__ import annotations

import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.metrics import FLUSH_INTERVAL, mark_dead_workers
from bot.server import create_app
from storage import Action, EventInput, Store, Via, open_store

from .helpers import ADMIN, free_port
from .servers import GitHubKeysStub, InProcessApp, http_request, start_server
from .slackworld import AUDIT, ServerWorld

MALFORMED_KEY = "apk_not-a-key"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and labels, as prometheus-client's parser reads the exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(target) -> dict:
    status, headers, body = target.request("GET", "/metrics")
    assert status == 200, body
    assert headers.get("Content-Type", "").startswith("text/plain; version=")
    return samples(body.decode())


def verify(target, key: str) -> str:
    status, _, body = target.request("POST", "/v1/keys/verify", json.dumps({"key": key}),
                                     {"Content-Type": "application/json"})
    assert status == 200
    return json.loads(body)["code"]


@pytest.fixture
def api(database_url):
    open_store(database_url).close()
    app = create_app(Settings(database_url=database_url, admins=(ADMIN,)))
    yield InProcessApp(app)
    app.store.close()


# -- in process -------------------------------------------------------------------------------

def test_verifications_and_latency_are_counted_by_route_and_code(api, store: Store):
    valid = store.keys.create(name="a", owner="qa", actor="test")[0]
    before = scrape(api)
    assert verify(api, valid.secret) == "VALID"
    assert verify(api, MALFORMED_KEY) == "MALFORMED"
    assert api.request("GET", "/v1/auth", headers={"X-API-Key": valid.secret})[0] == 204
    assert api.request("GET", "/v1/auth/some/original/path")[0] == 401  # no key: MALFORMED
    after = scrape(api)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("apikeys_verifications_total", route="verify", code="VALID") == 1
    assert delta("apikeys_verifications_total", route="verify", code="MALFORMED") == 1
    assert delta("apikeys_verifications_total", route="auth", code="VALID") == 1
    assert delta("apikeys_verifications_total", route="auth", code="MALFORMED") == 1
    assert delta("apikeys_request_duration_seconds_count", route="verify") == 2
    assert delta("apikeys_request_duration_seconds_count", route="auth") == 2
    assert delta("apikeys_request_duration_seconds_sum", route="auth") > 0
    assert value(after, "apikeys_database_up") == 1


def test_revocations_denials_and_leaks_come_from_the_audit_log(api, store: Store, run_cli):
    keys = store.keys.create(name="k", owner="qa", actor="test", count=4)
    store.keys.revoke(keys[0].key.id, actor="U1", via="slack")
    assert run_cli("revoke", keys[1].key.id, "--actor", "oncall").code == 0
    store.keys.revoke(keys[2].key.id, via=Via.GITHUB, actor="github-secret-scanning", reason="compromised")
    store.keys.revoke(keys[2].key.id, actor="U1", via="slack")  # already revoked: not counted
    with store.db.write() as session:
        store.audit.append(session, EventInput(actor="U2", action=Action.KEY_REVOKE_DENIED, key_id=keys[3].key.id,
                                               details={"reason": "not an admin"}))
        store.audit.append(session, EventInput(actor="apikeys", action=Action.KEY_LEAKED, key_id=keys[3].key.id,
                                               details={"channel_id": "C1"}))
        # as GitHub's route (issue 15) records a report: its actor, and its name as ``via``
        store.audit.append(session, EventInput(actor="github-secret-scanning", action=Action.KEY_LEAKED,
                                               key_id=keys[2].key.id,
                                               details={"via": "github-secret-scanning", "source": "content"}))
    found = scrape(api)
    assert value(found, "apikeys_revocations_total", channel="slack") == 1
    assert value(found, "apikeys_revocations_total", channel="cli") == 1
    assert value(found, "apikeys_revocations_total", channel="github") == 1
    assert value(found, "apikeys_denials_total", action="key.revoke_denied") == 1
    assert value(found, "apikeys_leaks_total", source="slack") == 1
    assert value(found, "apikeys_leaks_total", source="github") == 1
    store.keys.revoke(keys[3].key.id, actor="U1", via="slack")
    assert value(scrape(api), "apikeys_revocations_total", channel="slack") == 2  # counted on, incrementally


def test_the_outbox_backlog_and_its_oldest_post(api, database_url):
    notifying = open_store(database_url, notify_channel=AUDIT)
    try:
        assert value(scrape(api), "apikeys_audit_posts_pending") == 0
        notifying.keys.create(name="queued", owner="qa", actor="test")  # one audit post queued
        time.sleep(1.1)
        notifying.keys.create(name="sent", owner="qa", actor="test")  # and one delivered
        newest = notifying.outbox.claim("test")[-1]
        notifying.outbox.delivered(newest.id, "test")
        found = scrape(api)
        assert value(found, "apikeys_audit_posts_pending") == 1
        assert 1 <= value(found, "apikeys_audit_post_oldest_pending_age_seconds") < 30
    finally:
        notifying.close()


def test_a_database_that_does_not_answer_is_a_zero_not_an_error(api, store: Store):
    store.keys.create(name="a", owner="qa", actor="test")
    api.app.store.db.ping = lambda: False  # what a database that went away answers
    found = scrape(api)
    assert value(found, "apikeys_database_up") == 0
    assert ("apikeys_audit_posts_pending", ()) not in found


def test_dead_workers_live_gauges_are_dropped(tmp_path: Path):
    dead_pid = 2 ** 22 + 12345  # above pid_max's default: no such process
    (tmp_path / f"gauge_livesum_{dead_pid}.db").write_bytes(b"")
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")  # counters of dead workers still count
    mark_dead_workers(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"counter_{dead_pid}.db", f"gauge_livesum_{os.getpid()}.db"])


# -- the real server --------------------------------------------------------------------------

def _spread_requests(url: str, count: int = 32) -> None:
    """/healthz over ``count`` simultaneous keep-alive connections: the kernel gives both workers a share."""
    parts = urlsplit(url)

    def one(_):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            for _ in range(3):
                conn.request("GET", "/healthz")
                conn.getresponse().read()
        finally:
            conn.close()

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(one, range(count)))


@pytest.mark.end_to_end
def test_counts_add_up_across_two_workers(make_world, store: Store, tmp_path: Path):
    """One VALID, one REVOKED and one MALFORMED verification and one failed audit post, on the real
    server with two workers: the counters and the pending gauge say exactly that."""
    metrics_dir = tmp_path / "metrics"
    valid = store.keys.create(name="live", owner="qa", actor="test")[0]
    revoked = store.keys.create(name="gone", owner="qa", actor="test")[0]
    store.keys.revoke(revoked.key.id, via="cli", actor="test", reason="rotation")  # this store queues no post
    world: ServerWorld = make_world({"WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    # The one post (the REVOKED key's use alert) fails (Slack's own {"ok": false}: no retry inside the
    # Slack client); its retry, a second later, then hangs past the end of the test (10 s timeout).
    world.stub.fail_next("chat.postMessage", error="internal_error")
    world.stub.fail_next("chat.postMessage", error="internal_error", delay=20)
    _spread_requests(world.server.url)
    assert verify(world, valid.secret) == "VALID"
    assert verify(world, revoked.secret) == "REVOKED"
    assert verify(world, MALFORMED_KEY) == "MALFORMED"
    # Each worker moves its counts into the shared files once a second (FLUSH_INTERVAL): wait until
    # the post has failed, and a flush more, then the counts must be exactly these.
    deadline = time.monotonic() + 15
    while value(scrape(world), "apikeys_audit_post_attempts_total", outcome="failed") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(FLUSH_INTERVAL + 0.5)
    found = scrape(world)
    assert value(found, "apikeys_verifications_total", route="verify", code="VALID") == 1
    assert value(found, "apikeys_verifications_total", route="verify", code="REVOKED") == 1
    assert value(found, "apikeys_verifications_total", route="verify", code="MALFORMED") == 1
    assert sum(v for (name, _), v in found.items() if name == "apikeys_verifications_total") == 3
    assert value(found, "apikeys_audit_post_attempts_total", outcome="failed") == 1
    assert value(found, "apikeys_audit_post_attempts_total", outcome="delivered") == 0
    assert value(found, "apikeys_audit_posts_pending") == 1
    assert value(found, "apikeys_request_duration_seconds_count", route="healthz") >= 96
    assert value(found, "apikeys_workers") == 2
    assert value(found, "apikeys_database_up") == 1
    # Both workers wrote counts of their own, and the scrape (answered by one of them) added them up.
    worker_pids = {name.rsplit("_", 1)[1] for name in os.listdir(metrics_dir) if name.startswith("histogram_")}
    assert len(worker_pids) >= 2, sorted(os.listdir(metrics_dir))


def test_the_server_empties_a_given_metrics_dir_at_start(database_url: str, tmp_path: Path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")
    server = start_server(database_url, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        assert not (metrics_dir / "counter_999999.db").exists()
        scrape(server)
    finally:
        server.stop()


def test_a_metrics_dir_holding_anything_else_is_refused_and_nothing_in_it_deleted(tmp_path: Path):
    """The data directory given by mistake: its database (and everything else) survives, and the
    server refuses to start with one line naming the problem."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'apikeys.db'}"
    open_store(url).close()
    (data / "counter_123.db").write_bytes(b"stale")
    before = sorted(p.name for p in data.iterdir())
    server = start_server(url, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(data)}, wait=False)
    assert server.proc.wait(timeout=30) == 2
    assert sorted(p.name for p in data.iterdir()) == before
    assert "PROMETHEUS_MULTIPROC_DIR" in server.log() and "apikeys.db" in server.log()
    assert "Traceback" not in server.log()


def test_without_a_metrics_dir_the_server_makes_a_private_one_and_removes_it(database_url: str, tmp_path: Path):
    env = {"TMPDIR": str(tmp_path)}
    server = start_server(database_url, tmp_path, env)
    try:
        made = [p for p in tmp_path.iterdir() if p.name.startswith("apikeys-metrics-")]
        assert len(made) == 1 and made[0].stat().st_mode & 0o777 == 0o700
        scrape(server)
    finally:
        assert server.stop() == 0
    assert not made[0].exists()


def test_metrics_port_keeps_metrics_off_the_public_listener(database_url: str, tmp_path: Path):
    port = free_port()
    server = start_server(database_url, tmp_path, {"METRICS_PORT": str(port)})
    try:
        assert server.request("GET", "/metrics")[0] == 404
        assert verify(server, MALFORMED_KEY) == "MALFORMED"
        time.sleep(FLUSH_INTERVAL + 0.5)  # the worker's next flush
        deadline = time.monotonic() + 15
        while True:
            try:
                status, headers, body = http_request(f"http://127.0.0.1:{port}", "GET", "/metrics")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert status == 200
        found = samples(body.decode())
        assert value(found, "apikeys_verifications_total", route="verify", code="MALFORMED") == 1
        assert value(found, "apikeys_database_up") == 1
        assert http_request(f"http://127.0.0.1:{port}", "GET", "/healthz")[0] == 404
    finally:
        assert server.stop() == 0


def test_the_grafana_dashboard_uses_only_metrics_the_server_exports(api):
    import re

    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for expr in exprs for name in re.findall(r"apikeys_\w+", expr)}
    families = {family.name for family in text_string_to_metric_families(api.request("GET", "/metrics")[2].decode())}
    exported = families | {f"{name}_total" for name in families}
    assert used and used <= exported, used - exported


def test_a_github_alert_counts_its_leak_revocation_and_request(database_url, store: Store, github_keys: GitHubKeysStub):
    open_store(database_url).close()
    app = create_app(Settings(database_url=database_url, admins=(ADMIN,), github_keys_url=github_keys.url))
    api = InProcessApp(app)
    try:
        leaked = store.keys.create(name="pushed", owner="qa", actor="test")[0]
        before = scrape(api)
        body = json.dumps([{"token": leaked.secret, "type": "apikeys_api_key",
                            "url": "https://github.com/octo/repo/blob/abc/app.py", "source": "content"}]).encode()
        status, _, _ = api.request("POST", "/v1/secret-scanning/github", body, github_keys.sign(body))
        assert status == 200
        after = scrape(api)
    finally:
        app.store.close()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("apikeys_leaks_total", source="github") == 1
    assert delta("apikeys_revocations_total", channel="github") == 1  # APIKEYS_PUBLIC_LEAK_ACTION=revoke
    assert delta("apikeys_revocations_total", channel="slack") == 0
    assert delta("apikeys_request_duration_seconds_count", route="secret_scanning_github") == 1
