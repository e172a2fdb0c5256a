"""The audit channel as an external witness of the audit log.

Every audit-channel post ends with a context block naming the log position it follows and the
first 12 hex characters of the head hash there (``#1234 · 3f9a0b1c2d3e…``); the post is rendered
from the entries it reports, so a retried post names the same position. Slack keeps what it was
shown: reading the channel back (``conversations.history``) and comparing every position with the
log catches a log that was truncated, rolled back to an older copy, or swapped for another chain,
even by someone who holds the database and the signing key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from slack_sdk import WebClient

from storage.audit import AuditLog, ChainBreak

SHOWN = 12
WITNESS_RE = re.compile(r"#(\d{1,18}) · ([0-9a-f]{%d})…" % SHOWN)
PAGE = 200  # conversations.history's recommended page size


def witness_text(entry_id: int, head_hash: str) -> str:
    return f"#{entry_id} · {head_hash[:SHOWN]}…"


def _witness_in(message: dict) -> tuple[int, str] | None:
    for block in message.get("blocks") or []:
        if not isinstance(block, dict) or block.get("type") != "context":
            continue
        for element in block.get("elements") or []:
            text = element.get("text") if isinstance(element, dict) else None
            match = WITNESS_RE.search(text) if isinstance(text, str) else None
            if match:
                return int(match.group(1)), match.group(2)
    return None


def witnesses(client: WebClient, channel: str) -> Iterator[tuple[int, str]]:
    """Every position this app's own posts in ``channel`` name, newest first, page by page."""
    bot_id = client.auth_test().get("bot_id")
    cursor = None
    while True:
        page = client.conversations_history(channel=channel, limit=PAGE, cursor=cursor)
        for message in page.get("messages") or []:
            if bot_id and message.get("bot_id") != bot_id:
                continue  # someone else's message cannot vouch for (or against) the log
            found = _witness_in(message)
            if found:
                yield found
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not page.get("has_more") or not cursor:
            return


def check_against_slack(audit: AuditLog, client: WebClient, channel: str) -> tuple[ChainBreak | None, int]:
    """Compare every witnessed position with the log: (the first disagreement, posts read)."""
    last = audit.last_id()
    first_problem: ChainBreak | None = None
    seen = 0
    for entry_id, shown in witnesses(client, channel):
        seen += 1
        if first_problem is not None and entry_id >= first_problem.entry_id:
            continue
        stored = audit.hash_at(entry_id) if entry_id <= last else None
        if stored is None:
            first_problem = ChainBreak(entry_id, f"missing: the audit channel saw entry {entry_id} (head {shown}…) but "
                                                 f"the log ends at entry {last} (truncated or rolled back)")
        elif not stored.startswith(shown):
            first_problem = ChainBreak(entry_id, f"not as witnessed: the audit channel saw head {shown}… here, the log "
                                                 f"has {stored[:SHOWN]}… (edited and recomputed, or another log "
                                                 "swapped in)")
    if seen == 0 and last:
        first_problem = ChainBreak(last, f"not witnessed: <#{channel}> holds no post of this app naming a log position "
                                         "(the wrong channel, or its posts were deleted)")
    return first_problem, seen
