"""Benchmark 5: the server's resident memory (master + workers) after start, after list/history
and revoke clicks with 100,000 keys, and its growth over 100,000 further verifications.
Target: under 150 MB, and no growth.

    .venv/bin/python -m bench.memory [--workers 2]
"""

from __future__ import annotations

import http.client
import json
import threading
import time

from storage import open_store
from tests.slackhttp import walk_buttons

from .common import database, machine, running


def verify_many(url: str, secret: str, count: int, clients: int = 4) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"key": secret})

    def run(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port))
        for _ in range(n):
            conn.request("POST", "/v1/keys/verify", body, {"Content-Type": "application/json"})
            assert conn.getresponse().read()
        conn.close()

    threads = [threading.Thread(target=run, args=(count // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY of the measured server")
    args = parser.parse_args()
    url = database("memory.db")
    store = open_store(url)
    created = store.keys.create(name="svc", owner="load", actor="bench", count=100_000)
    secret = created[0].secret
    store.close()
    with running(url, workers=args.workers) as (stub, server):
        time.sleep(3)  # let every worker finish booting before the first reading
        at_start, at_start_pss = server.rss_mb(), server.pss_mb()
        for _ in range(50):
            reply = server.sender.command("")
            server.sender.command("history")
            block_id, revoke = next((b, e) for b, e in walk_buttons(reply.body["blocks"]) if e["text"]["text"] == "Revoke")
            server.sender.click(revoke["action_id"], revoke["value"], block_id=block_id, response_url=reply.response_url)
        verify_many(server.url, secret, 10_000)
        warmed, warmed_pss = server.rss_mb(), server.pss_mb()
        verify_many(server.url, secret, 100_000)
        after, after_pss = server.rss_mb(), server.pss_mb()
        workers = len(server.pids()) - 1
    print(f"machine: {machine()}; 100,000 keys; master + {workers} workers")
    print("                                      RSS (sum)   PSS (shared pages split)")
    print(f"at start:                             {at_start:6.1f} MB   {at_start_pss:6.1f} MB")
    print(f"after Slack traffic + 10k verify:     {warmed:6.1f} MB   {warmed_pss:6.1f} MB")
    print(f"after 100,000 more verifications:     {after:6.1f} MB   {after_pss:6.1f} MB"
          f"  (growth {after - warmed:+.1f} MB RSS, {after_pss - warmed_pss:+.1f} MB PSS)")
    print(json.dumps({"start_mb": at_start, "warm_mb": warmed, "after_mb": after, "start_pss": at_start_pss,
                      "warm_pss": warmed_pss, "after_pss": after_pss}))


if __name__ == "__main__":
    main()
