"""Who may do what, declared on the listener (``middleware=[require_admin]``), Dispatch-style.

``require_admin`` runs before the listener. When the user may not act it answers them once (the
ack of a slash command, or a reply through the click's ``response_url``), records the denial
(``key.revoke_denied`` for a click, with what it was about) and the listener never runs. The rule
itself lives in one place, ``Actor.refusal``.

``deny`` is the one way any listener refuses a click for other reasons (a forged value, a replay,
an expired confirmation): the same audit entry, log line and reply.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Ack, BoltContext, BoltResponse

from storage import Action, ApiKey, EventInput, Store

from ..logs import fields
from . import reply
from .context import Actor
from .errors import report
from .render import Answer, message

log = logging.getLogger("apikeys.slack")

# Refused clicks are recorded and answered after the ack, like every click (Slack waits 3 s at most).
_after_ack = ThreadPoolExecutor(max_workers=4, thread_name_prefix="apikeys-denial")


@dataclass(frozen=True)
class Subject:
    """What a refused click was about, for its audit entry: a key, or other details (an owner)."""

    key: ApiKey | None = None
    details: dict[str, Any] = field(default_factory=dict)


def refused(why: str, verb: str = "Not done") -> Answer:
    """``:no_entry_sign: Not revoked: <Why>. Nothing changed.``"""
    return message(f":no_entry_sign: {verb}: {why[0].upper() + why[1:]}. Nothing changed.")


def deny(store: Store, actor: Actor, response_url: str | None, why: str, subject: Subject | None = None,
         requested: str | None = None) -> None:
    """Refuse a click: record ``key.revoke_denied`` (who, where, why, about what), log, answer."""
    subject = subject or Subject()
    key = subject.key
    details = {"why": why, "channel_id": actor.channel_id, "team_id": actor.user_team_id, **subject.details}
    if key is not None:
        details.update(name=key.name, key=key.masked, owner=key.owner)
    if requested:
        details["requested_key_id"] = requested[:40]
    store.audit.record(EventInput(actor=actor.user_id or "unknown", action=Action.KEY_REVOKE_DENIED,
                                  key_id=key.id if key is not None else None, details=details))
    log.info(fields(event="revoke", key_id=key.id if key else None, actor=actor.user_id, outcome="denied", why=why))
    answer = refused(why, "Not revoked")
    reply.send(response_url, replace=False, text=answer.text, blocks=answer.blocks)


def deny_after_ack(context: BoltContext, body: dict, why: str, subject: Subject | None = None,
                   requested: str | None = None) -> None:
    """``deny`` from a middleware, which must return the ack at once: the rest runs after it."""

    def run() -> None:
        try:
            deny(context["store"], context["actor"], body.get("response_url"), why, subject, requested)
        except Exception as error:  # the same boundary as every listener's
            report(error, body)

    _after_ack.submit(run)


def require_admin(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """Listener middleware: only admins of this app's own workspace get past it."""
    actor: Actor = context["actor"]
    why = actor.refusal()
    if why is None:
        return next()
    if "command" in body:  # a slash command: the refusal is the ack's ephemeral answer
        words = str(body.get("text") or "").split()
        log.info(fields(event="command", actor=actor.user_id, word=" ".join(words[:2])[:40], outcome="refused"))
        return ack(response_type="ephemeral", text=why, blocks=message(f":no_entry_sign: {why} Nothing changed.").blocks)
    deny_after_ack(context, body, why, context.get("subject"))
    return ack()
