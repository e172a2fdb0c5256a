"""``/apikeys`` and its words. Every answer is the ephemeral body of the ack (well within 3 s)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from slack_bolt import Ack, App, BoltContext

from storage import Action, DatabaseUnavailable, EventInput, StorageError, Store
from storage.keyformat import find_keys_in_text
from storage.keys import KEY_ID_RE, OWNER_RE, encode_cursor
from storage.refusals import record_refusal
from storage.timeutil import utcnow

from ..logs import fields, looks_like_key, redact
from . import blocks, render
from .authz import refused, require_admin
from .context import Actor
from .errors import guarded
from .render import Answer, help_answer, message
from .values import HistoryView, ListView, OwnerAction

log = logging.getLogger("apikeys.slack")

MENTION_RE = re.compile(r"^<@([UW][A-Z0-9]{2,31})(?:\|[^>]*)?>$")
PLAIN_USER_RE = re.compile(r"^@?([UW][A-Z0-9]{2,31})$")
MAX_TEXT = 500


def parse_user(text: str) -> str | None:
    match = MENTION_RE.match(text) or PLAIN_USER_RE.match(text)
    return match.group(1) if match else None


def _admins(store: Store, words: list[str]) -> Answer:
    """``admins`` lists them; a malformed ``admins add/remove`` gets the help (a well-formed one is
    ``change_admins``, behind ``require_admin``)."""
    if not words:
        return Answer("Admins", blocks.admins_blocks(store.admins.list()))
    verb, rest = words[0].lower(), words[1:]
    if verb not in ("add", "remove") or len(rest) != 1:
        return help_answer("Use `/apikeys admins add @user` or `/apikeys admins remove @user`.")
    return help_answer("Name the user with an @-mention, like `/apikeys admins add @ana`.")


def _change_admins(store: Store, actor: Actor, verb: str, user_id: str) -> Answer:
    replayed = _replayed(store, actor, f"admins {verb}", {"user_id": user_id})
    if replayed:
        return replayed
    if verb == "add":
        changed = store.admins.add(user_id, actor=actor.user_id)
        text = f"<@{user_id}> is now an admin." if changed else f"<@{user_id}> was already an admin; nothing changed."
    else:
        store.admins.remove(user_id, actor=actor.user_id)  # refuses to remove the last admin
        text = f"<@{user_id}> is no longer an admin."
    log.info(fields(event="admins." + verb, actor=actor.user_id, target=user_id, outcome="ok"))
    return message(text)


def _replayed(store: Store, actor: Actor, what: str, details: dict) -> Answer | None:
    """Process a state-changing command once: a second delivery of the same signed request (a
    replay within Slack's 5-minute signature window) is refused and recorded. Every command that
    changes anything calls this before it does."""
    if actor.request_id and store.receipts.first_use(f"command|{actor.request_id}|{actor.user_id}"):
        return None
    why = ("this command was already processed (a replayed request)" if actor.request_id
           else "Slack did not identify this command (no trigger_id)")
    record_refusal(store.audit, EventInput(  # recorded each time; the audit channel hears of it once in 5 minutes
        actor=actor.user_id or "unknown", action=Action.COMMAND_DENIED,
        details={"command": what, "why": why, "channel_id": actor.channel_id, "team_id": actor.user_team_id, **details},
    ))
    log.info(fields(event="command", actor=actor.user_id, command=what, outcome="denied", why=why))
    return refused(why)


def _find(store: Store, query: str, admin: bool) -> Answer:
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
        return Answer(f"{key.name}: {key.status_at(now).value}", blocks.find_results([key], "", now, exact=True, admin=admin))
    if looks_like_key(query):
        message = ("That looks like an apikeys key, but its checksum does not match: a typo or a truncated copy. "
                   "Paste the whole key, or search by its last four characters.")
        return Answer(message, blocks.text_message(f":grey_question: {message}"))
    keys = store.keys.search(query, limit=blocks.KEYS_PER_PAGE)
    return Answer(f"{len(keys)} matching keys", blocks.find_results(keys, query[:80], now, exact=False, admin=admin))


def _revoke_owner(store: Store, owner: str) -> Answer:
    """The bulk confirmation (nothing changes until its button is clicked)."""
    now = utcnow()
    page = store.keys.list_keys(status="active", owner=owner, limit=blocks.OWNER_NAMES_SHOWN, now=now)
    total = store.keys.count_keys(status="active", owner=owner, now=now)
    if not page.items:
        return message(f"{owner} has no active keys; nothing to revoke.")
    action = OwnerAction(owner=owner, up_to=encode_cursor(page.items[0]), count=total, issued_at=int(time.time()))
    return Answer(f"Revoke {total} keys of {owner}?", blocks.owner_confirm(owner, page.items, total, action))


def _words(text: object) -> list[str]:
    text = str(text or "").strip()
    return text.split() if len(text) <= MAX_TEXT else []


def admins_change(text: object) -> tuple[str, str] | None:
    """``("add" | "remove", user_id)`` for a well-formed ``admins add/remove @user``, else None."""
    words = _words(text)
    if len(words) == 3 and words[0].lower() == "admins" and words[1].lower() in ("add", "remove"):
        user_id = parse_user(words[2])
        if user_id:
            return words[1].lower(), user_id
    return None


def owner_to_revoke(text: object) -> str | None:
    """The owner of a well-formed ``revoke-owner <owner>``, else None."""
    words = _words(text)
    if len(words) == 2 and words[0].lower() == "revoke-owner" and OWNER_RE.match(words[1]) and not looks_like_key(words[1]):
        return words[1]
    return None


def _history(store: Store, rest: list[str]) -> Answer:
    """``history``, ``history <key id>`` or ``history <name>`` (one key of that name, else which ids to use)."""
    if not rest:
        return render.history(store, HistoryView())
    wanted = " ".join(rest)
    if KEY_ID_RE.match(wanted):
        return render.history(store, HistoryView(key_id=wanted))
    if looks_like_key(wanted) or len(wanted) > 200:
        return help_answer("Use `/apikeys history <key id or name>`; to look a pasted key up, `/apikeys find`.")
    named = [k for k in store.keys.search(wanted, limit=50) if k.name == wanted]
    if len(named) == 1:
        return render.history(store, HistoryView(key_id=named[0].id))
    if not named:
        return help_answer(f"No key is named “{wanted[:80]}”. Use `/apikeys history <key id or name>` "
                           "(`/apikeys find` finds keys by part of a name).")
    ids = ", ".join(f"`{k.id}` ({k.status_at(utcnow()).value})" for k in named[:10])
    return message(f"{len(named)} keys are named “{wanted[:80]}”: {ids}. Use `/apikeys history <key id>`.")


def answer(store: Store, text: str, actor: Actor | None = None) -> Answer:
    """What ``/apikeys <text>`` shows, for everything anyone may ask. Unknown or malformed text gets
    the help; a well-formed admin command never gets here (its own listener, behind require_admin).
    Buttons that change anything are shown to admins only."""
    admin = actor is not None and actor.sees_admin_buttons
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        return help_answer("That command is too long.")
    words = text.split()
    verb = words[0].lower() if words else "list"
    rest = words[1:]
    if verb not in blocks.HELP_WORDS and verb not in ("revoke", "rotate"):  # those two: where their buttons are
        return help_answer(f"I don't know “{redact(text[:80])}”.")
    if verb in ("list", "revoked", "all", "expired") and not rest:
        return render.key_list(store, ListView(status="active" if verb == "list" else verb), admin=admin)
    if verb == "owner":
        if len(rest) != 1 or not OWNER_RE.match(rest[0]) or looks_like_key(rest[0]):
            return help_answer("Use `/apikeys owner <owner>`, with the owner as one word (like payments-team).")
        return render.key_list(store, ListView(status="active", owner=rest[0]), admin=admin)
    if verb == "history":
        return _history(store, rest)
    if verb == "owners" and not rest:
        return Answer("Owners' channels", blocks.owners_blocks(store.owners.list()))
    if verb == "admins":
        return _admins(store, rest)
    if verb == "find":
        return _find(store, text[len(words[0]):].strip(), admin)
    if verb == "revoke-owner":
        return help_answer("Use `/apikeys revoke-owner <owner>`, with the owner as one word.")
    if verb in ("revoke", "rotate"):  # not commands: the buttons on a key's card are
        how = f"`/apikeys find <key, name or last four>`, then `{verb.capitalize()}` on its card"
        if not admin:
            ask = actor.admins_to_ask() if actor is not None else "an admin"
            return message(f":no_entry_sign: Only apikeys admins can {verb} keys; ask {ask}. Nothing changed.")
        return help_answer(f"To {verb} a key: {how}.")
    if verb == "help" and not rest:
        return help_answer()
    return help_answer(f"I don't know “{redact(text[:80])}”.")


def _respond(ack: Ack, command: dict, context: BoltContext, compute: Callable[[], Answer]) -> None:
    """Ack with the answer (ephemeral, well within Slack's 3 s); bad input is the help, nothing changed."""
    try:
        result = compute()
    except DatabaseUnavailable:
        raise
    except StorageError as exc:  # bad input, an unknown key, the last admin: say so
        result = help_answer(str(exc))
    words = _words(command.get("text"))
    log.info(fields(event="command", actor=context["actor"].user_id, word=(words[0] if words else "list")[:20]))
    ack(response_type="ephemeral", text=redact(result.text), blocks=result.blocks)


@guarded
def change_admins(ack: Ack, command: dict, context: BoltContext) -> None:
    verb, user_id = admins_change(command.get("text"))
    _respond(ack, command, context, lambda: _change_admins(context["store"], context["actor"], verb, user_id))


@guarded
def revoke_owner(ack: Ack, command: dict, context: BoltContext) -> None:
    owner = owner_to_revoke(command.get("text"))
    _respond(ack, command, context, lambda: _revoke_owner(context["store"], owner))


@guarded
def apikeys(ack: Ack, command: dict, context: BoltContext) -> None:
    _respond(ack, command, context, lambda: answer(context["store"], command.get("text", ""), context["actor"]))


def _text_matches(parse: Callable[[object], object]) -> Callable[[dict], bool]:
    def matches(command: dict) -> bool:
        return parse(command.get("text")) is not None
    return matches


def register(app: App) -> None:
    # Bolt takes the first listener whose matchers accept the command: the admin words first.
    app.command("/apikeys", matchers=[_text_matches(admins_change)], middleware=[require_admin])(change_admins)
    app.command("/apikeys", matchers=[_text_matches(owner_to_revoke)], middleware=[require_admin])(revoke_owner)
    app.command("/apikeys")(apikeys)
