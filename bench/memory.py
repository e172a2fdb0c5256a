"""Benchmark 5: the server's resident memory (master + workers) after start, after list/history
and revoke clicks with 100,000 keys, and its growth over 100,000 further verifications.
Target: under 150 MB, and no growth.

    .venv/bin/python -m bench.memory
"""

from __future__ import annotations

import http.client
import json
import threading

from bot.devslack import walk_buttons
from storage import open_store

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
    url = database("memory.db")
    store = open_store(url)
    created = store.keys.create(name="svc", owner="load", actor="bench", count=100_000)
    secret = created[0].secret
    store.close()
    with running(url) as (stub, server):
        at_start = server.rss_mb()
        for _ in range(50):
            reply = server.sender.command("")
            server.sender.command("history")
            block_id, revoke = next((b, e) for b, e in walk_buttons(reply.body["blocks"]) if e["text"]["text"] == "Revoke")
            server.sender.click(revoke["action_id"], revoke["value"], block_id=block_id, response_url=reply.response_url)
        verify_many(server.url, secret, 10_000)
        warmed = server.rss_mb()
        verify_many(server.url, secret, 100_000)
        after = server.rss_mb()
        workers = len(server.pids()) - 1
    print(f"machine: {machine()}; 100,000 keys; master + {workers} workers")
    print(f"RSS at start:                         {at_start:6.1f} MB")
    print(f"RSS after Slack traffic + 10k verify: {warmed:6.1f} MB")
    print(f"RSS after 100,000 more verifications: {after:6.1f} MB  (growth {after - warmed:+.1f} MB)")
    print(json.dumps({"start_mb": at_start, "warm_mb": warmed, "after_mb": after}))


if __name__ == "__main__":
    main()
