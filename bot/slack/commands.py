"""``/apikeys`` and its words. Every answer is the ephemeral body of the ack (well within 3 s)."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from slack_bolt import Ack, App

from storage import Action, DatabaseUnavailable, EventInput, StorageError, Store
from storage.keyformat import find_keys_in_text
from storage.keys import KEY_ID_RE, OWNER_RE, encode_cursor
from storage.timeutil import utcnow

from ..logs import fields, looks_like_key, redact
from . import blocks
from .context import Actor
from .errors import guarded
from .views import HistoryView, ListView, OwnerAction

log = logging.getLogger("apikeys.slack")

MENTION_RE = re.compile(r"^<@([UW][A-Z0-9]{2,31})(?:\|[^>]*)?>$")
PLAIN_USER_RE = re.compile(r"^@?([UW][A-Z0-9]{2,31})$")
MAX_TEXT = 500


@dataclass(frozen=True)
class Answer:
    text: str
    blocks: list[dict]


def render_list(store: Store, view: ListView) -> Answer:
    now = utcnow()
    page = store.keys.list_keys(status=view.status, owner=view.owner, limit=blocks.KEYS_PER_PAGE,
                                after=view.after, before=view.before, now=now)
    total = store.keys.count_keys(status=view.status, owner=view.owner, now=now, cap=blocks.COUNT_CAP)
    return Answer(f"{blocks.STATUS_TITLES[view.status]}", blocks.key_list(page, view, total, now))


def render_history(store: Store, view: HistoryView) -> Answer:
    key = store.keys.get(view.key_id) if view.key_id else None
    per_page = blocks.EVENTS_PER_PAGE
    events = store.audit.recent(limit=per_page + 1, key_id=view.key_id, before_id=view.before_id,
                                after_id=view.after_id)
    if view.after_id is not None:  # paging back towards the newest: the extra entry is the newest one
        has_newer, events = len(events) > per_page, events[-per_page:]
        has_older = True
    else:
        has_older, events = len(events) > per_page, events[:per_page]
        has_newer = view.before_id is not None
    return Answer("Audit history", blocks.history_blocks(events, view, has_older=has_older, has_newer=has_newer, key=key))


def help_answer(problem: str | None = None) -> Answer:
    return Answer("apikeys help", blocks.help_blocks(problem))


def parse_user(text: str) -> str | None:
    match = MENTION_RE.match(text) or PLAIN_USER_RE.match(text)
    return match.group(1) if match else None


def _admins(store: Store, actor: Actor, words: list[str]) -> Answer:
    if not words:
        return Answer("Admins", blocks.admins_blocks(store.admins.list()))
    verb, rest = words[0].lower(), words[1:]
    if verb not in ("add", "remove") or len(rest) != 1:
        return help_answer("Use `/apikeys admins add @user` or `/apikeys admins remove @user`.")
    user_id = parse_user(rest[0])
    if user_id is None:
        return help_answer("Name the user with an @-mention, like `/apikeys admins add @ana`.")
    refusal = actor.refusal()
    if refusal:
        log.info(fields(event="admins." + verb, actor=actor.user_id, target=user_id, outcome="refused"))
        return Answer(refusal, blocks.text_message(f":no_entry_sign: {refusal} Nothing changed."))
    replayed = _replayed(store, actor, f"admins {verb}", {"user_id": user_id})
    if replayed:
        return replayed
    if verb == "add":
        changed = store.admins.add(user_id, actor=actor.user_id)
        message = f"<@{user_id}> is now an admin." if changed else f"<@{user_id}> was already an admin; nothing changed."
    else:
        store.admins.remove(user_id, actor=actor.user_id)  # refuses to remove the last admin
        message = f"<@{user_id}> is no longer an admin."
    log.info(fields(event="admins." + verb, actor=actor.user_id, target=user_id, outcome="ok"))
    return Answer(message, blocks.text_message(message))


def _replayed(store: Store, actor: Actor, what: str, details: dict) -> Answer | None:
    """Process a state-changing command once: a second delivery of the same signed request (a
    replay within Slack's 5-minute signature window) is refused and recorded. Every command that
    changes anything calls this before it does."""
    if actor.request_id and store.receipts.first_use(f"command|{actor.request_id}|{actor.user_id}"):
        return None
    why = ("this command was already processed (a replayed request)" if actor.request_id
           else "Slack did not identify this command (no trigger_id)")
    store.audit.record(EventInput(
        actor=actor.user_id or "unknown", action=Action.COMMAND_DENIED,
        details={"command": what, "why": why, "channel_id": actor.channel_id, "team_id": actor.user_team_id, **details},
    ))
    log.info(fields(event="command", actor=actor.user_id, command=what, outcome="denied", why=why))
    message = f":no_entry_sign: Not done: {why[0].upper() + why[1:]}. Nothing changed."
    return Answer(message, blocks.text_message(message))


def _find(store: Store, query: str) -> Answer:
    """A pasted full key shows its card (never repeating it); a fragment shows matching keys."""
    if not query:
        return help_answer("Use `/apikeys find <key, masked key, last four characters or name>`.")
    now = utcnow()
    pasted = find_keys_in_text(query)
    if pasted:
        key = store.keys.find_by_secret(pasted[0])
        if key is None:
            message = ("That is a well-formed apikeys key, but not one this key store issued. "
                       "If it came from another environment, revoke it there.")
            return Answer(message, blocks.text_message(f":grey_question: {message}"))
        return Answer(f"{key.name}: {key.status_at(now).value}", blocks.find_results([key], "", now, exact=True))
    if looks_like_key(query):
        message = ("That looks like an apikeys key, but its checksum does not match: a typo or a truncated copy. "
                   "Paste the whole key, or search by its last four characters.")
        return Answer(message, blocks.text_message(f":grey_question: {message}"))
    keys = store.keys.search(query, limit=blocks.KEYS_PER_PAGE)
    return Answer(f"{len(keys)} matching keys", blocks.find_results(keys, query[:80], now, exact=False))


def _revoke_owner(store: Store, actor: Actor, owner: str) -> Answer:
    refusal = actor.refusal()
    if refusal:
        return Answer(refusal, blocks.text_message(f":no_entry_sign: {refusal} Nothing changed."))
    now = utcnow()
    page = store.keys.list_keys(status="active", owner=owner, limit=blocks.OWNER_NAMES_SHOWN, now=now)
    total = store.keys.count_keys(status="active", owner=owner, now=now)
    if not page.items:
        message = f"{owner} has no active keys; nothing to revoke."
        return Answer(message, blocks.text_message(message))
    action = OwnerAction(owner=owner, up_to=encode_cursor(page.items[0]), count=total, issued_at=int(time.time()))
    return Answer(f"Revoke {total} keys of {owner}?", blocks.owner_confirm(owner, page.items, total, action))


def answer(store: Store, actor: Actor, text: str) -> Answer:
    """What ``/apikeys <text>`` shows. Unknown or malformed text gets the help."""
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        return help_answer("That command is too long.")
    words = text.split()
    verb = words[0].lower() if words else "list"
    rest = words[1:]
    if verb in ("list", "revoked", "all", "expired") and not rest:
        return render_list(store, ListView(status="active" if verb == "list" else verb))
    if verb == "owner":
        if len(rest) != 1 or not OWNER_RE.match(rest[0]) or looks_like_key(rest[0]):
            return help_answer("Use `/apikeys owner <owner>`, with the owner as one word (like payments-team).")
        return render_list(store, ListView(status="active", owner=rest[0]))
    if verb == "history":
        if len(rest) > 1 or (rest and not KEY_ID_RE.match(rest[0])):
            return help_answer("Use `/apikeys history` or `/apikeys history <key id>` (key ids look like key_…).")
        return render_history(store, HistoryView(key_id=rest[0] if rest else None))
    if verb == "admins":
        return _admins(store, actor, rest)
    if verb == "find":
        return _find(store, text[len(words[0]):].strip())
    if verb == "revoke-owner":
        if len(rest) != 1 or not OWNER_RE.match(rest[0]) or looks_like_key(rest[0]):
            return help_answer("Use `/apikeys revoke-owner <owner>`, with the owner as one word.")
        return _revoke_owner(store, actor, rest[0])
    if verb == "help" and not rest:
        return help_answer()
    return help_answer(f"I don't know “{redact(text[:80])}”.")


def register(app: App, store: Store) -> None:
    @app.command("/apikeys")
    @guarded
    def apikeys_command(ack: Ack, command: dict, context) -> None:
        actor: Actor = context["actor"]
        try:
            result = answer(store, actor, command.get("text", ""))
        except DatabaseUnavailable:
            raise
        except StorageError as exc:  # bad input or an unknown key: say so, nothing changed
            result = help_answer(str(exc))
        words = str(command.get("text") or "").split()
        log.info(fields(event="command", actor=actor.user_id, word=(words[0] if words else "list")[:20]))
        ack(response_type="ephemeral", text=redact(result.text), blocks=result.blocks)
