"""Benchmark 8: one GitHub secret scanning alert of 1,000 tokens (target: well inside GitHub's 30 s).

The key API's WSGI app in process (one worker's ``create_app`` path: ``KeyApiApp`` with
``GitHubAlerts``), GitHub's public keys served by the tests' stand-in over loopback HTTP, alerts
signed with a fresh P-256 key. Each round is a new alert of 1,000 of our active keys (revoke policy:
1,000 revocations, 2,000 audit entries, 1,000 receipts, one checkpoint and one audit post, in one
transaction), then the same alert again (GitHub's retry: nothing to do), then 1,000 look-alikes
(no database). The database also holds ``--keys`` other keys.

    .venv/bin/python -m bench.github_alert [--rounds 3] [--keys 10000]
    BENCH_DATABASE_URL=postgresql+psycopg://… .venv/bin/python -m bench.github_alert   # an empty database
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bot.api import KeyApiApp
from bot.github import ALERT_PATH, GitHubAlerts, GitHubKeys
from storage import checkpoints, open_store
from storage.checkpoints import load_signer
from tests.servers import GitHubKeysStub, wsgi_request

from .common import database, machine

TOKENS = 1000


def _alert(app, stub: GitHubKeysStub, tokens: list[str]) -> float:
    body = json.dumps([{"token": t, "type": "apikeys_api_key", "url": f"https://github.com/o/r/blob/main/{i}.env",
                        "source": "content"} for i, t in enumerate(tokens)]).encode()
    headers = stub.sign(body)
    start = time.perf_counter()
    status, _, data = wsgi_request(app, "POST", ALERT_PATH, body, headers)
    elapsed = time.perf_counter() - start
    assert status == 200 and len(json.loads(data)) == len(tokens), data[:200]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10_000, help="other keys in the database")
    args = parser.parse_args()

    url = database("github_alert.db")
    signer = load_signer(checkpoints.generate()[0])  # as in production with APIKEYS_AUDIT_SIGNING_KEY
    store = open_store(url, notify_channel="C0AUDIT", signer=signer)
    stub = GitHubKeysStub().start()
    try:
        if args.keys:
            store.keys.create(name="other", owner="bystanders", actor="bench", count=args.keys)
        app = KeyApiApp(store, github_alerts=GitHubAlerts(GitHubKeys(stub.url)))
        _alert(app, stub, [store.keys.create(name="warm", owner="w", actor="bench")[0].secret])  # fetch GitHub's keys
        fresh, retried, lookalike = [], [], []
        for round_ in range(args.rounds):
            created = store.keys.create(name=f"leaked{round_}", owner="leaky", actor="bench", count=TOKENS)
            tokens = [c.secret for c in created]
            fresh.append(_alert(app, stub, tokens))
            retried.append(_alert(app, stub, tokens))
            lookalike.append(_alert(app, stub, [t[:-1] + ("A" if t[-1] != "A" else "B") for t in tokens]))
        assert store.keys.count_keys(status="active", owner="leaky") == 0
        assert store.audit.verify() is None
    finally:
        stub.stop()
        store.close()

    def fmt(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"

    print(f"machine: {machine()}; database {url.split(':')[0]}; {args.keys:,} other keys; "
          f"audit signing {'on' if signer else 'off'}")
    print(f"alert of {TOKENS:,} active keys (revoked, 2,000 entries, one transaction): {fmt(fresh)}")
    print(f"the same alert retried (nothing to do):                       {fmt(retried)}")
    print(f"{TOKENS:,} look-alikes (no database):                                {fmt(lookalike)}")
    print(json.dumps({"fresh_s": fresh, "retried_s": retried, "lookalike_s": lookalike}))


if __name__ == "__main__":
    main()
