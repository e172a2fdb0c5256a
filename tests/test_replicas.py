"""Several replicas on one database.

Two real servers (``python -m bot``, two gunicorn workers each) share one database (a SQLite
file, or PostgreSQL with ``TEST_DATABASE_URL``), one Slack stand-in and one signing secret. There
is no load balancer: each request goes to the replica the test names. What must hold across
replicas: a key is revoked once however many replicas receive the click, every replica refuses a
revoked key on the very next request (nothing is cached), an audit post queued by a replica that
dies is delivered by a survivor exactly once, and replicas starting together share one schema.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlmodel import SQLModel

from storage import Store, migrate, open_store
from storage.db import Database
from storage.outbox import OutboxMessage

from .helpers import ADMIN
from .servers import ServerProcess, start_server, wait_healthy
from .slackhttp import SlackReply, SlackSender
from .slackstub import OWN_TEAM, SlackStub, assert_nothing_more
from .slackworld import (
    AUDIT,
    INCIDENT,
    SECOND_ADMIN,
    SIGNING_SECRET,
    Seeded,
    audit_posts,
    build_click,
    events,
    is_audit_post,
    open_confirmation,
    outbox_rows,
    post_signed,
    revoke_flow,
    seed,
    select_state,
    server_env,
    shown,
    wait_audit_post,
    wait_until,
)

HEALTH_TIMEOUT = 40.0  # two replicas starting at once on a 2-core machine shared with other tests


# ======================================================================= helpers


def start_replicas(database_url: str, tmp_path: Path, env: dict[str, str], count: int = 2) -> list[ServerProcess]:
    """Start ``count`` servers at the same moment and wait until all are healthy."""
    servers = [start_server(database_url, tmp_path, env, wait=False) for _ in range(count)]
    try:
        wait_healthy(servers, HEALTH_TIMEOUT)
    except BaseException:
        for server in servers:
            server.stop_quietly()
        raise
    return servers


def verify(url: str, secret: str) -> tuple[int, dict[str, Any]]:
    """POST /v1/keys/verify on one replica (a new connection each time)."""
    request = urllib.request.Request(url + "/v1/keys/verify", method="POST",
                                     data=json.dumps({"key": secret}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def auth(url: str, secret: str) -> tuple[int, dict[str, str], Any]:
    """GET /v1/auth on one replica; returns (status, lower-case headers, JSON body or None)."""
    request = urllib.request.Request(url + "/v1/auth", headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(body) if body else None


def race(sends: list[tuple[SlackSender, bytes]]) -> list[SlackReply]:
    """Send each body through its sender (its replica) at the same moment."""
    barrier = threading.Barrier(len(sends))

    def send(item: tuple[SlackSender, bytes]) -> SlackReply:
        sender, body = item
        barrier.wait()
        return post_signed(sender, body)

    with ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(send, sends))


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the gunicorn workers of a replica's master), from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")


@dataclass
class Cluster:
    """Two replicas on one database, one Slack stand-in, and a store on that database."""

    stub: SlackStub
    replicas: list[ServerProcess]
    views: list[SimpleNamespace]  # per replica: .sender, .stub, .url (what the helpers of tests/slackworld.py need)
    store: Store
    database_url: str

    def logs(self) -> str:
        return "\n".join(r.log() for r in self.replicas)


@pytest.fixture
def cluster(database_url: str, tmp_path: Path, store: Store) -> Iterator[Cluster]:
    stub = SlackStub().start()
    with stub.lock:
        stub.users[SECOND_ADMIN] = {"team_id": OWN_TEAM, "name": "ann"}
    replicas: list[ServerProcess] = []
    try:
        replicas = start_replicas(database_url, tmp_path, server_env(stub))
        views = [SimpleNamespace(sender=SlackSender(r.url, SIGNING_SECRET, stub), stub=stub, url=r.url)
                 for r in replicas]
        yield Cluster(stub, replicas, views, store, database_url)
    finally:
        for replica in replicas:
            replica.stop_quietly()
        stub.stop()


def warm_up(cluster: Cluster, key: Seeded, rounds: int = 4) -> None:
    """Verify a valid key on every replica a few times (new connections, so both workers are
    likely to answer): any cache would now hold VALID."""
    for _ in range(rounds):
        for view in cluster.views:
            status, body = verify(view.url, key.secret)
            assert (status, body["code"]) == (200, "VALID"), body


def assert_refused_by(url: str, key: Seeded) -> None:
    status, body = verify(url, key.secret)
    assert (status, body["code"], body["valid"], body.get("key_id")) == (200, "REVOKED", False, key.id), body
    status, headers, body = auth(url, key.secret)
    assert status == 401, (status, headers, body)
    assert headers.get("www-authenticate", "").startswith("Bearer")
    assert body["code"] == "REVOKED" and "x-key-id" not in headers


# ======================================================================= 1. one revocation


def test_simultaneous_revoke_clicks_on_two_replicas_revoke_once(cluster: Cluster):
    store, stub = cluster.store, cluster.stub
    a, b = cluster.views
    store.admins.add(SECOND_ADMIN, actor=ADMIN)
    first = seed(store, "billing-api")
    second = seed(store, "search-indexer")
    warm_up(cluster, first)
    warm_up(cluster, second)

    rounds = [
        # Two admins, each on their own confirmation card, each card served by another replica.
        (first, [(a, ADMIN, "compromised"), (b, SECOND_ADMIN, "rotation")]),
        # The same admin twice (two cards, two trigger ids), one click through each replica.
        (second, [(a, ADMIN, "decommissioned"), (b, ADMIN, "other")]),
    ]
    for key, clickers in rounds:
        cards = [open_confirmation(view, key, user=user) for view, user, _ in clickers]
        sends = [(view.sender, build_click(view.sender, card, "Revoke Key", response_url=thread, user=user,
                                           state=select_state(card, reason)))
                 for (view, user, reason), (card, thread) in zip(clickers, cards, strict=True)]
        threads = [thread for _, thread in cards]
        mark = stub.mark()
        replies = race(sends)
        assert [(r.status, r.text) for r in replies] == [(200, ""), (200, "")]  # both acked at once

        # As soon as one replica has answered "revoked", the other one refuses the key.
        result = stub.wait_for(lambda c, threads=threads: c.kind == "response" and c.url in threads and c.ok
                               and ":white_check_mark:" in shown(c.body), since=mark,
                               description="the revocation result")
        winner = threads.index(result.url)
        loser = 1 - winner
        assert_refused_by(clickers[loser][0].url, key)
        assert_refused_by(clickers[winner][0].url, key)

        # The other click is told the key is already revoked.
        other = stub.wait_for(lambda c, url=threads[loser]: c.kind == "response" and c.url == url and c.ok,
                              since=mark, description="the other click's answer")
        assert "already revoked" in shown(other.body) and ":white_check_mark:" not in shown(other.body), \
            shown(other.body)
        assert len([c for c in stub.calls[mark:] if c.kind == "response" and c.url in threads]) == 2

        revoked = events(store, "key.revoked", key.id)
        assert len(revoked) == 1, revoked
        assert revoked[0].actor == clickers[winner][1]
        assert revoked[0].details["reason"] == clickers[winner][2]
        assert store.keys.get(key.id).revoke_reason == clickers[winner][2]

        # One audit post for that revocation and one notice where it happened; nothing from the loser.
        post = wait_audit_post(stub, "Key revoked", key.name, since=mark)
        assert f"<@{clickers[winner][1]}>" in shown(post.body)
        stub.wait_for_api("chat.postMessage", lambda c, name=key.name: c.body["channel"] == INCIDENT and name in c.body["text"],
                          since=mark)
        assert_nothing_more(stub, lambda c: (is_audit_post(c) and "Key revoked" in shown(c.body))
                            or (c.method_name == "chat.postMessage" and c.body.get("channel") == INCIDENT),
                            since=stub.mark(), what="second revocation post or notice", timeout=1.5)
        assert len(audit_posts(stub, "Key revoked", key.name)) == 1
        notices = [c for c in stub.api_calls("chat.postMessage") if c.body.get("channel") == INCIDENT]
        assert len([c for c in notices if key.name in c.body["text"]]) == 1

    assert not events(store, "key.revoke_denied")
    assert store.audit.verify() is None
    assert "Traceback" not in cluster.logs()


# ======================================================================= 2. no replica caches


def test_a_revocation_on_one_replica_is_seen_by_every_worker_of_every_replica(cluster: Cluster):
    store, stub = cluster.store, cluster.stub
    a, b = cluster.views
    key = seed(store, "billing-api")
    bystander = seed(store, "search-indexer")
    warm_up(cluster, key)

    mark = stub.mark()
    _, outcome, _ = revoke_flow(a, key, reason="compromised")
    assert ":white_check_mark:" in shown(outcome)

    answers = []
    for i in range(20):  # alternating replicas, a new connection each time
        status, body = verify(cluster.views[i % 2].url, key.secret)
        answers.append((status, body["code"], body["valid"], body.get("key_id"), "name" in body))
    assert answers == [(200, "REVOKED", False, key.id, False)] * 20, answers
    for view in (b, a, b, a):
        status, headers, body = auth(view.url, key.secret)
        assert (status, body["code"]) == (401, "REVOKED") and "x-key-id" not in headers

    # Another key is untouched, on both replicas.
    for view in (a, b):
        assert verify(view.url, bystander.secret)[1]["code"] == "VALID"
        assert auth(view.url, bystander.secret)[0] == 204

    # Every presentation is counted, whichever replica saw it, and alerted on once.
    # (each server's use recorder writes off the request's thread: wait for the last of them)
    wait_until(lambda: getattr(store.keys.revoked_uses.get(key.id), "uses", 0) >= 24, "24 counted presentations")
    use = store.keys.revoked_uses.get(key.id)
    assert use is not None and use.uses == 24
    alert = wait_audit_post(stub, "Revoked key presented", key.name, since=mark)
    assert_nothing_more(stub, lambda c: is_audit_post(c) and "Revoked key presented" in shown(c.body),
                        since=stub.calls.index(alert) + 1, what="second use-after-revoke alert")
    assert len(events(store, "key.used_after_revoke", key.id)) == 1
    assert len(events(store, "key.revoked", key.id)) == 1
    assert "Traceback" not in cluster.logs()


# ======================================================================= 3. a replica dies


def test_post_pending_on_a_killed_replica_is_delivered_once_by_the_survivor(cluster: Cluster):
    store, stub = cluster.store, cluster.stub
    doomed, survivor = cluster.replicas
    a = cluster.views[0]
    key = seed(store, "billing-api")
    with stub.lock:
        stub.unknown_channels.add(AUDIT)  # every audit post fails (channel_not_found) for now

    mark = stub.mark()
    _, outcome, _ = revoke_flow(a, key, reason="compromised")  # through the replica about to die
    assert ":white_check_mark:" in shown(outcome)
    stub.wait_for(lambda c: c.method_name == "chat.postMessage" and c.body["channel"] == AUDIT and not c.ok,
                  since=mark, description="a failed audit post")
    # Kill it between attempts: the failure is on record and nobody holds the row.
    wait_until(lambda: [(r.attempts >= 1, r.claimed_until, r.delivered_at) for r in outbox_rows(store)]
               == [(True, None, None)], "the failed attempt to be recorded")
    doomed_workers = child_pids(doomed.proc.pid)
    survivor_workers = child_pids(survivor.proc.pid)
    assert len(doomed_workers) == 2 and len(survivor_workers) == 2, (doomed_workers, survivor_workers)
    doomed.proc.kill()  # SIGKILL the master: no graceful shutdown
    for pid in doomed_workers:  # ...and its workers, as when the whole replica (container) dies
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    doomed.proc.wait(timeout=10)
    wait_until(lambda: all(is_gone(pid) for pid in doomed_workers), "the killed replica's workers to be gone")
    row = outbox_rows(store)[0]
    assert row.delivered_at is None
    assert row.claimed_until is None or not any(row.claimed_by.startswith(f"{pid}-") for pid in doomed_workers), \
        "the killed replica died holding the lease (unlucky timing): the post now waits for the 60 s lease"

    # The channel is fixed; the survivor delivers at its next retry.
    with stub.lock:
        stub.unknown_channels.discard(AUDIT)
    post = wait_audit_post(stub, "Key revoked", key.name, since=mark, timeout=20)
    assert key.masked in shown(post.body) and f"<@{ADMIN}>" in shown(post.body) and "Compromised" in shown(post.body)
    assert_nothing_more(stub, is_audit_post, since=stub.calls.index(post) + 1,
                        what="duplicate audit post", timeout=2.0)
    delivered = [c for c in stub.calls[mark:] if is_audit_post(c) and key.name in shown(c.body)]
    assert len(delivered) == 1

    check = open_store(cluster.database_url, create_schema=False)
    try:
        assert check.outbox.pending() == 0
        with check.db.read() as session:
            rows = list(session.scalars(select(OutboxMessage)))
        assert len(rows) == 1 and rows[0].delivered_at is not None
        assert rows[0].claimed_by.split("-")[0] in {str(pid) for pid in survivor_workers}, rows[0].claimed_by
        assert len(events(check, "key.revoked", key.id)) == 1
    finally:
        check.close()
    assert verify(survivor.url, key.secret)[1]["code"] == "REVOKED"
    assert "Traceback" not in survivor.log()


# ======================================================================= 4. starting together


def test_replicas_starting_together_on_a_fresh_database_share_one_schema(database_url: str, tmp_path: Path):
    env = {"APIKEYS_ADMINS": ADMIN, "WEB_CONCURRENCY": "2"}
    replicas = [start_server(database_url, tmp_path, env, wait=False) for _ in range(2)]
    try:
        wait_healthy(replicas, HEALTH_TIMEOUT)

        db = Database(database_url)
        try:
            assert migrate.current_revision(db) == migrate.head_revision()
            with db.read_engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
                tables = set(inspect(conn).get_table_names())
            assert versions == [migrate.head_revision()]
            assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
        finally:
            db.dispose()

        store = open_store(database_url, create_schema=False)
        try:
            key = store.keys.create(name="billing-api", owner="payments", actor="seed")[0]
            for replica in replicas:
                status, body = verify(replica.url, key.secret)
                assert (status, body["code"], body["key_id"]) == (200, "VALID", key.key.id)
            assert store.keys.revoke(key.key.id, via="cli", actor="ops").revoked_now
            for replica in replicas:
                assert verify(replica.url, key.secret)[1]["code"] == "REVOKED"
            assert store.audit.verify() is None
        finally:
            store.close()
        for replica in replicas:
            assert replica.proc.poll() is None
            log = replica.log()
            assert "Traceback" not in log and "cannot start" not in log, log
    finally:
        for replica in replicas:
            replica.stop_quietly()
    assert [r.proc.returncode for r in replicas] == [0, 0]
