"""Benchmark 1: /apikeys list and history, and a Revoke click, round trip through signed HTTP,
with 10 keys vs 100,000 keys stored. Target: the 100k figure within 1.3x of the 10-key one,
and p95 far under Slack's 3 s (target < 300 ms).

    .venv/bin/python -m bench.slack_latency [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import time

from storage import open_store
from tests.slackhttp import walk_buttons

from .common import database, fmt_ms, machine, running, summary


def seed(url: str, count: int) -> None:
    store = open_store(url)
    remaining = count
    while remaining:
        batch = min(remaining, 50_000)
        store.keys.create(name="svc", owner=f"team{remaining % 7}", actor="bench", count=batch)
        remaining -= batch
    store.close()


def measure(url: str, rounds: int) -> dict[str, dict]:
    results: dict[str, list[float]] = {"list": [], "history": [], "revoke_click": []}
    with running(url) as (stub, server):
        sender = server.sender
        for _ in range(5):  # warm-up
            sender.command("")
        for _ in range(rounds):
            start = time.perf_counter()
            reply = sender.command("")
            results["list"].append(time.perf_counter() - start)
            assert reply.status == 200
            start = time.perf_counter()
            assert sender.command("history").status == 200
            results["history"].append(time.perf_counter() - start)
            # Revoke click: from the click to the confirmation arriving at the response_url.
            mark = stub.mark()
            start = time.perf_counter()
            block_id, revoke = next((b, e) for b, e in walk_buttons(reply.body["blocks"]) if e["text"]["text"] == "Revoke")
            sender.click(revoke["action_id"], revoke["value"], block_id=block_id, response_url=reply.response_url)
            stub.wait_for_response(reply.response_url, since=mark, timeout=10)
            results["revoke_click"].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    figures = {}
    for count in (10, 100_000):
        url = database(f"slack-{count}.db")
        seed(url, count)
        figures[count] = measure(url, args.rounds)
    print(f"machine: {machine()}")
    print(f"{'operation':<14} {'10 keys median/p95':>22} {'100k keys median/p95':>24} {'ratio (median)':>15}")
    for name in ("list", "history", "revoke_click"):
        small, big = figures[10][name], figures[100_000][name]
        print(f"{name:<14} {fmt_ms(small['median']):>10} / {fmt_ms(small['p95']):>9} "
              f"{fmt_ms(big['median']):>12} / {fmt_ms(big['p95']):>9} {big['median'] / small['median']:>14.2f}x")
    print(json.dumps({str(k): v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
