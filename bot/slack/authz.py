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
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Ack, BoltContext, BoltResponse

from storage import Action, ApiKey, EventInput, Store
from storage.refusals import record_refusal

from ..logs import fields
from .context import Actor
from .errors import report
from .ids import refusal_of
from .render import Answer, message

log = logging.getLogger("apikeys.slack")



@dataclass(frozen=True)
class Subject:
    """What a refused click was about, for its audit entry: a key, or other details (an owner)."""

    key: ApiKey | None = None
    details: dict[str, Any] = field(default_factory=dict)


def refused(why: str, verb: str = "Not done") -> Answer:
    """``:no_entry_sign: Not revoked: <Why>. Nothing changed.``"""
    why = why.rstrip(". ")
    return message(f":no_entry_sign: {verb}: {why[0].upper() + why[1:]}. Nothing changed.")


def deny(context: BoltContext, body: dict, why: str, subject: Subject | None = None,
         requested: str | None = None) -> None:
    """Refuse a click: record what it would have done (``ids.refusal_of`` its action: ``key.revoke_denied``
    for a revocation) with who, where, why and about what; log; answer "<Not revoked>: <why>"."""
    store: Store = context["store"]
    actor: Actor = context["actor"]
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    refusal = refusal_of(first.get("action_id"))
    subject = subject or Subject()
    key = subject.key
    details = {"why": why, "channel_id": actor.channel_id, "team_id": actor.user_team_id, **subject.details}
    if actor.elsewhere:
        details["workspace"] = actor.elsewhere  # the other workspace or organisation the request named
    if key is not None:
        details.update(name=key.name, key=key.masked, owner=key.owner)
    if requested:
        details["requested_key_id"] = requested[:40]
    record_refusal(store.audit, EventInput(actor=actor.user_id or "unknown", action=refusal.action,
                                           key_id=key.id if key is not None else None, details=details))
    log.info(fields(event="click", key_id=key.id if key else None, actor=actor.user_id, outcome="denied",
                    refused=refusal.verb, why=why))
    answer = refused(why, refusal.verb)
    context["reply"].send(body.get("response_url"), replace=False, text=answer.text, blocks=answer.blocks)


def deny_after_ack(context: BoltContext, body: dict, why: str, subject: Subject | None = None,
                   requested: str | None = None) -> None:
    """``deny`` from a middleware, which must return the ack at once: the rest runs after it, on the
    app's own listener executor (Bolt's, as every listener runs: owned by the app, awaited by its tests)."""

    def run() -> None:
        try:
            deny(context, body, why, subject, requested)
        except Exception as error:  # the same boundary as every listener's
            report(error, body, replier=context["reply"])

    context["after_ack"](run)


def require_admin(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """Listener middleware: only admins of this app's own workspace get past it."""
    actor: Actor = context["actor"]
    why = actor.refusal()
    if why is None:
        return next()
    if "command" in body:  # a slash command: the refusal is the ack's ephemeral answer, recorded after it
        refuse_command_after_ack(context, body, why)
        return ack(response_type="ephemeral", text=why, blocks=message(f":no_entry_sign: {why} Nothing changed.").blocks)
    deny_after_ack(context, body, why, context.get("subject"))
    return ack()


def record_command_refusal(store: Store, actor: Actor, body: dict, why: str) -> None:
    """A refused slash command: ``command.denied`` (what was asked, by whom, where, why)."""
    words = str(body.get("text") or "").split()
    what = " ".join(words[:2])[:40]
    log.info(fields(event="command", actor=actor.user_id, word=what, outcome="refused"))
    record_refusal(store.audit, EventInput(
        actor=actor.user_id or "unknown", action=Action.COMMAND_DENIED,
        details={"command": what, "why": why, "channel_id": actor.channel_id, "team_id": actor.user_team_id,
                 **({"workspace": actor.elsewhere} if actor.elsewhere else {})}))


def refuse_command_after_ack(context: BoltContext, body: dict, why: str) -> None:
    def run() -> None:
        try:
            record_command_refusal(context["store"], context["actor"], body, why)
        except Exception as error:
            report(error, body, replier=context["reply"])

    context["after_ack"](run)


FOREIGN = ("only members of this app's own workspace can use apikeys; you are signed in from another "
           "workspace (for example in a shared channel)")


def own_workspace_only(context: BoltContext, body: dict, next, ack=None) -> BoltResponse | None:
    """Global middleware, before every command, click and view: a user of another workspace (Slack
    Connect) gets no list, card, history or admin list at all, and is told so; each refusal is
    recorded. Events (leak watch reads every message, whoever posted it) pass."""
    if not isinstance(body, dict) or body.get("type") == "event_callback" or "event" in body:
        return next()
    actor: Actor = context["actor"]
    if actor.in_own_workspace:
        return next()
    if "command" in body:
        refuse_command_after_ack(context, body, FOREIGN)
        text = f":no_entry_sign: {FOREIGN[0].upper() + FOREIGN[1:]}. Nothing was shown or changed."
        return ack(response_type="ephemeral", text=text, blocks=message(text).blocks)
    deny_after_ack(context, body, FOREIGN, _subject_of(context["store"], body))
    return ack() if ack is not None else None


def _subject_of(store: Store, body: dict) -> Subject | None:
    """What a refused click was about (the key its button names, or an owner), best effort, so that
    the refusal's entry names it."""
    from .values import BadValue, KeyAction, OwnerAction, decode

    actions = body.get("actions")
    value = actions[0].get("value") if isinstance(actions, list) and actions and isinstance(actions[0], dict) else None
    if not isinstance(value, str):
        return None
    try:
        key_action = decode(KeyAction, value)
    except BadValue:
        try:
            owner_action = decode(OwnerAction, value)
        except BadValue:
            return None
        return Subject(details={"owner": owner_action.owner, "count": owner_action.count})
    try:
        return Subject(key=store.keys.get(key_action.key_id))
    except Exception:
        return None
