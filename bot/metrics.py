"""Prometheus metrics: what the workers count as they serve, and what ``GET /metrics`` reads at
scrape time.

Counted as it happens (prometheus-client; under ``python -m bot`` in multi-process mode, so every
granian worker writes its counts to files of its own in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape,
answered by any worker, adds them all up; ``bot.server.prepare_metrics_dir`` sets that up):

* ``apikeys_verifications_total{route, code}``      every verification (``verify``, ``auth``)
* ``apikeys_request_duration_seconds{route}``        a histogram of the time the app took per request
* ``apikeys_audit_post_attempts_total{outcome}``     audit-channel deliveries, ``delivered`` / ``failed``
* ``apikeys_workers``                                the live worker processes

Read at scrape time (from the database, so they are the installation's, whichever process or replica
did it, the ``apikeys`` CLI included):

* ``apikeys_revocations_total{channel}``             revocations, by ``slack`` / ``cli`` / ``github``
* ``apikeys_denials_total{action}``                  refused revocations and commands
* ``apikeys_leaks_total{source}``                    leaked keys found (``slack`` leak watch, ``github``, ``cli``)
* ``apikeys_tamper_detected_total{action}``          tamper alerts (``audit.tamper_detected``) and revocations
                                                    restored (``key.revocation_restored``)
* ``apikeys_audit_posts_pending``, ``apikeys_audit_post_oldest_pending_age_seconds``  the outbox
* ``apikeys_database_up``                            1 when the key store answers (as ``/healthz``)

The audit log is append-only, so counts taken from it only ever grow: they are real counters,
read incrementally (each process remembers the last entry it counted). Being the installation's,
they are the same on every replica: aggregate them with ``max``, not ``sum``.

The hot path adds to lists of its own thread (``verified``, ``MeteredApp``), which are moved into
prometheus-client's values once a second and before a scrape (``flush``): no lock, no label lookup,
no write to the shared files per request. Another worker's last second may not be in a scrape yet.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from storage import Action, Store, VerifyCode
from storage.leaks import GITHUB_ACTOR
from storage.revocation import Via
from storage.timeutil import utcnow

from .wsgi import ROUTE_KEY

log = logging.getLogger("apikeys.metrics")

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE = CONTENT_TYPE_LATEST

# What this process counts. In multi-process mode the values live in files (the registry is only
# where they are declared); otherwise in this registry, which /metrics then reads.
LOCAL = CollectorRegistry(auto_describe=True)

VERIFICATIONS = Counter("apikeys_verifications", "Key verifications, by route and verification code",
                        ("route", "code"), registry=LOCAL)
# Seconds. The app answers a verification in ~0.1 ms, a Slack request in tens of ms.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DURATION = Histogram("apikeys_request_duration_seconds", "Time the application took to answer, by route",
                     ("route",), buckets=BUCKETS, registry=LOCAL)
AUDIT_POSTS = Counter("apikeys_audit_post_attempts", "Audit-channel post attempts, by outcome",
                      ("outcome",), registry=LOCAL)
WORKERS = Gauge("apikeys_workers", "Live server worker processes", registry=LOCAL, multiprocess_mode="livesum")

_POSTED = {outcome: AUDIT_POSTS.labels(outcome) for outcome in ("delivered", "failed")}

# The hot path does not touch prometheus-client (a locked write to a memory-mapped file per value,
# ~1.5 us each, three per verification): each thread adds to a list of its own (no lock, nothing
# shared), and ``flush`` moves what was added since the last flush into the metrics: once a second
# in each worker (``FLUSH_INTERVAL``), and in the worker that answers a scrape, first. Slot layout:
# one per verification series, then per route the histogram's sum and its buckets (+Inf last).
FLUSH_INTERVAL = 1.0
_TARGETS: list = []  # slot -> what its additions go to: a counter child, a histogram's sum or bucket value
_VERIFIED_SLOT: dict[str, dict[VerifyCode, int]] = {}
for _route in ("verify", "auth"):
    _VERIFIED_SLOT[_route] = {}
    for _code in VerifyCode:
        _VERIFIED_SLOT[_route][_code] = len(_TARGETS)
        _TARGETS.append(VERIFICATIONS.labels(_route, _code.value))
_threads: list[tuple[list, list]] = []  # (what a thread added, what of it was flushed)
_threads_lock = threading.Lock()
_ROUTE_SLOT: dict[str, int] = {}
OTHER = "other"  # the series of a request no route answered


def declare_routes(labels) -> None:
    """Slots for the duration histogram of each route label (the route table's, ``bot.api.table``),
    and ``other``; a label already declared keeps its slot. Called before the app serves."""
    with _threads_lock:
        for label in (*labels, OTHER):
            if label in _ROUTE_SLOT:
                continue
            child = DURATION.labels(label)
            _ROUTE_SLOT[label] = len(_TARGETS)
            _TARGETS.append(child._sum)  # prometheus-client's own values: non-cumulative buckets, as observe() writes
            _TARGETS.extend(child._buckets)
            if len(child._buckets) != len(BUCKETS) + 1:
                raise RuntimeError("prometheus_client's Histogram no longer keeps one value per bucket in _buckets")
        for added, flushed in _threads:  # threads that counted before: room for the new slots
            added.extend([0] * (len(_TARGETS) - len(added)))
            flushed.extend([0] * (len(_TARGETS) - len(flushed)))


_local = threading.local()
_flush_lock = threading.Lock()


declare_routes(())
_OTHER_SLOT = _ROUTE_SLOT[OTHER]


def _slots() -> list:
    with _threads_lock:
        added = [0] * len(_TARGETS)
        _threads.append((added, [0] * len(_TARGETS)))
    _local.added = added
    return added


def flush() -> None:
    """Move what this process's threads counted since the last flush into the metrics."""
    with _flush_lock:
        with _threads_lock:
            threads = list(_threads)
            targets = list(_TARGETS)
        for added, flushed in threads:
            for slot in range(min(len(targets), len(added))):
                now = added[slot]  # only its own thread writes it; reading it is safe
                delta = now - flushed[slot]
                if delta:
                    targets[slot].inc(delta)
                    flushed[slot] = now


_flusher_pid: int | None = None


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        try:
            flush()
        except Exception:  # never let counting stop: one line, then on
            log.exception("metrics: flush failed")


def start_flushing() -> None:
    """In each worker process (after the fork): the thread that flushes once a second."""
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    _flusher_pid = os.getpid()
    threading.Thread(target=_flush_forever, name="metrics-flush", daemon=True).start()
    atexit.register(flush)


def verified(route: str, code: VerifyCode) -> None:
    """One verification answered on ``route`` (``verify`` or ``auth``)."""
    try:
        added = _local.added
    except AttributeError:
        added = _slots()
    added[_VERIFIED_SLOT[route][code]] += 1


def audit_post(outcome: str) -> None:
    """One audit-channel post attempt: ``delivered`` or ``failed``."""
    _POSTED[outcome].inc()


class MeteredApp:
    """Wraps the WSGI app: the time each request took, in the histogram of its route."""

    __slots__ = ("app",)

    def __init__(self, app):
        self.app = app
        declare_routes(app.routes.labels)
        WORKERS.set(1)  # one per worker process (livesum: dead workers' files are dropped at scrape)
        if MULTIPROCESS:
            start_flushing()

    def __getattr__(self, name):  # the wrapped app's attributes (store, slack_app, ...)
        return getattr(self.app, name)

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        started = perf_counter()
        try:
            return self.app(environ, start_response)
        finally:
            elapsed = perf_counter() - started
            slot = _ROUTE_SLOT.get(environ.get(ROUTE_KEY), _OTHER_SLOT)
            try:
                added = _local.added
            except AttributeError:
                added = _slots()
            added[slot] += elapsed
            added[slot + 1 + bisect_left(BUCKETS, elapsed)] += 1


# -- read at scrape time ------------------------------------------------------------------------

REVOCATION_CHANNELS = ("slack", "cli", "github")
# What an entry's ``via`` says about the interface (storage.revocation.Via; "github" in older entries).
_CHANNEL_OF_VIA = {Via.SLACK.value: "slack", Via.CLI.value: "cli", Via.GITHUB.value: "github", "github": "github",
                   Via.API.value: "api"}
DENIALS = (Action.KEY_REVOKE_DENIED.value, Action.COMMAND_DENIED.value)
TAMPER = (Action.TAMPER_DETECTED.value, Action.KEY_REVOCATION_RESTORED.value, Action.SIGNING_STARTED.value)
COUNTED = (Action.KEY_REVOKED.value, Action.KEY_LEAKED.value, *DENIALS, *TAMPER)


def revocation_channel(actor: str, details: dict) -> str:
    """Which interface revoked: what the entry says (``via``), else GitHub's actor, else Slack (whose
    listeners are the only other path that revokes)."""
    channel = _CHANNEL_OF_VIA.get(details.get("via"))
    if channel is not None:
        return channel
    return "github" if actor == GITHUB_ACTOR else "slack"


def leak_source(actor: str, details: dict) -> str:
    """Where a leak was found: GitHub's report, ``apikeys leak report`` (``cli``), else Slack's leak watch."""
    return revocation_channel(actor, details)


class AuditCounts:
    """Counts of revocations, denials and leaks in the audit log, kept up to date incrementally."""

    def __init__(self, store: Store):
        self.store = store
        self.last_id = 0
        self.revocations = dict.fromkeys(REVOCATION_CHANNELS, 0)
        self.denials = dict.fromkeys(DENIALS, 0)
        self.leaks = dict.fromkeys(REVOCATION_CHANNELS, 0)
        self.tamper = dict.fromkeys(TAMPER, 0)
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            while True:
                rows = self.store.audit.tail(self.last_id, COUNTED)
                for entry_id, action, actor, details_text in rows:
                    try:
                        details = json.loads(details_text)
                    except ValueError:
                        details = {}
                    if not isinstance(details, dict):
                        details = {}
                    if action == Action.KEY_REVOKED.value:
                        channel = revocation_channel(actor, details)
                        self.revocations[channel] = self.revocations.get(channel, 0) + 1
                    elif action == Action.KEY_LEAKED.value:
                        source = leak_source(actor, details)
                        self.leaks[source] = self.leaks.get(source, 0) + 1
                    elif action in self.tamper:
                        self.tamper[action] += 1
                    else:
                        self.denials[action] = self.denials.get(action, 0) + 1
                    self.last_id = entry_id
                if len(rows) < 5000:
                    return


class StoreCollector:
    """What /metrics reads from the key store when it is scraped. A database that does not answer
    gives ``apikeys_database_up 0`` and leaves out what it could not read; never an error."""

    def __init__(self, store: Store):
        self.store = store
        self.counts = AuditCounts(store)

    def describe(self):
        return []

    def collect(self):
        up = self.store.db.ping()
        yield GaugeMetricFamily("apikeys_database_up", "1 when the key store answers (as /healthz), else 0",
                                value=1 if up else 0)
        if not up:
            return
        try:
            pending, oldest = self.store.outbox.backlog()
            self.counts.refresh()
        except Exception as exc:  # the database went away between the ping and these reads
            log.warning("metrics: the key store could not be read: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily("apikeys_audit_posts_pending", "Audit-channel posts queued and not delivered yet",
                                value=pending)
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily("apikeys_audit_post_oldest_pending_age_seconds",
                                "Age of the oldest audit-channel post not delivered yet (0 when none is)", value=age)
        counts = self.counts
        families = (
            ("apikeys_revocations", "Keys revoked (installation-wide, from the audit log), by channel", "channel",
             counts.revocations),
            ("apikeys_denials", "Refused revocations and commands (installation-wide, from the audit log), by action",
             "action", counts.denials),
            ("apikeys_leaks", "Leaked keys found (installation-wide, from the audit log), by source", "source",
             counts.leaks),
            ("apikeys_tamper_detected", "What apikeys found someone else did to its tables (installation-wide, from "
             "the audit log): audit.tamper_detected alerts and key.revocation_restored", "action", counts.tamper),
        )
        for name, documentation, label, values in families:
            family = CounterMetricFamily(name, documentation, labels=(label,))
            for value_label, value in values.items():
                family.add_metric((value_label,), value)
            yield family


_PID_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def mark_dead_workers(path: str) -> None:
    """Drop the live gauges of worker processes that are gone (granian replaces a dead worker)."""
    from prometheus_client import multiprocess

    for name in os.listdir(path):
        match = _PID_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:  # alive, another user's (not ours to judge)
            pass


class MetricsEndpoint:
    """The body of ``GET /metrics`` for one worker's store."""

    def __init__(self, store: Store):
        self.registry = CollectorRegistry(auto_describe=False)
        self.path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if MULTIPROCESS else None
        if self.path:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry, path=self.path)
        else:
            self.registry.register(_Forward(LOCAL))
        self.registry.register(StoreCollector(store))

    def render(self) -> bytes:
        flush()
        if self.path:
            mark_dead_workers(self.path)
        return generate_latest(self.registry)


class _Forward:
    """Another registry's metrics, as one collector (this process's own counts, outside multi-process mode)."""

    def __init__(self, registry: CollectorRegistry):
        self.source = registry

    def collect(self):
        return self.source.collect()
