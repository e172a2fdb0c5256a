"""Benchmark 6: revocation-to-refusal across two replicas on PostgreSQL: from the `Revoke Key`
response on replica A to the first refusal on replica B. Target: the very next request.

    BENCH_DATABASE_URL=postgresql+psycopg://postgres:postgres@127.0.0.1:5432/apikeys_bench \\
        .venv/bin/python -m bench.replica_latency [--rounds 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import time

from storage import open_store
from tests.slackstub import SlackStub

from .common import Server, fmt_ms, machine, summary


def verify(conn: http.client.HTTPConnection, secret: str) -> str:
    conn.request("POST", "/v1/keys/verify", json.dumps({"key": secret}), {"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())["code"]


def main() -> None:
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        raise SystemExit("set BENCH_DATABASE_URL to a PostgreSQL database (created if missing is not done here)")
    store = open_store(url)
    stub = SlackStub().start()
    a, b = Server(url, stub), Server(url, stub)
    latencies, requests_until_refused = [], []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", b.port)
        for _ in range(args.rounds):
            created = store.keys.create(name="victim", owner="bench", actor="bench")[0]
            assert verify(conn, created.secret) == "VALID"
            reply = a.sender.command(f"find {created.secret}")
            card_url = reply.response_url
            mark = stub.mark()
            a.sender.click_button(reply.body["blocks"], "Revoke", response_url=card_url)
            card = stub.wait_for_response(card_url, since=mark)
            mark = stub.mark()
            a.sender.click_button(card["blocks"], "Revoke Key", response_url=card_url)
            stub.wait_for_response(card_url, since=mark)  # the result card: the revocation is committed
            revoked_at = time.perf_counter()
            tries = 0
            while True:
                tries += 1
                if verify(conn, created.secret) == "REVOKED":
                    break
            latencies.append(time.perf_counter() - revoked_at)
            requests_until_refused.append(tries)
    finally:
        a.stop()
        b.stop()
        stub.stop()
        store.close()
    stats = summary(latencies)
    print(f"machine: {machine()}; PostgreSQL; two replicas x 2 workers; {args.rounds} revocations")
    print(f"requests to replica B until the first refusal: max {max(requests_until_refused)} "
          f"(1 = the very next request), all: {sorted(set(requests_until_refused))}")
    print(f"time from the result card to B's refusal: median {fmt_ms(stats['median'])}, p95 {fmt_ms(stats['p95'])}")
    print(json.dumps({"max_requests": max(requests_until_refused), **stats}))


if __name__ == "__main__":
    main()
