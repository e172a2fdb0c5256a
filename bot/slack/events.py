"""Events API listeners: leak watch on channel messages.

When a message contains one of our keys (format and checksum first, then the digest lookup),
the bot replies in the message's thread with a warning naming the key (masked) and its owner,
with a ``Revoke`` button while it is active, and records ``key.leaked`` (which also alerts the
audit channel and the owner's channel). The warning is kept true: once the key is revoked or
rotated it is updated in place (``storage.cards``) to say by whom, with no live button. It never
repeats the secret and never revokes by itself. Each (message, key) is handled once, so a retried
event (``X-Slack-Retry-Num``) or an edit that adds nothing new gives no second warning; the
receipt and the ``key.leaked`` entry are one transaction.

Only this app's own messages are ignored: a key printed by a CI bot, a webhook or another app is
a leak like any other. Everything a message shows is scanned: its text, its blocks, attachments
(text, fields, titles, footers), files (names, titles, snippet previews).
"""

from __future__ import annotations

import logging

from slack_bolt import App, BoltContext
from slack_sdk.errors import SlackApiError

from storage import Action, EventInput, Store
from storage.keyformat import find_keys_in_text
from storage.timeutil import utcnow

from ..logs import fields
from . import blocks
from .errors import guarded

log = logging.getLogger("apikeys.leakwatch")

IGNORED_SUBTYPES = {"message_deleted", "channel_join", "channel_leave", "message_replied"}
SHOWN_FIELDS = ("text", "blocks", "attachments", "files", "file")
MAX_STRINGS = 5000  # a message is at most a few hundred strings; a hostile one is cut short


def _strings(value, out: list[str]) -> None:
    if len(out) >= MAX_STRINGS:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def _texts(message: dict) -> str:
    """Every string a message shows: text, blocks, attachments and files (snippet previews included)."""
    parts: list[str] = []
    for name in SHOWN_FIELDS:
        _strings(message.get(name), parts)
    return "\n".join(parts)


def _is_own(message: dict, bot_id: str | None, bot_user_id: str | None) -> bool:
    """Whether this app posted the message (its warnings repeat no secret, but never scan them)."""
    return bool((bot_id and message.get("bot_id") == bot_id) or (bot_user_id and message.get("user") == bot_user_id))


def warn_about_leaks(store: Store, event: dict, client, bot_user_id: str | None, bot_id: str | None = None) -> int:
    """Warn about every known key newly present in the message; returns how many warnings."""
    subtype = event.get("subtype")
    if subtype in IGNORED_SUBTYPES:
        return 0
    message, previous = event, None
    if subtype == "message_changed":
        message = event.get("message") or {}
        previous = event.get("previous_message") or {}
    if not isinstance(message, dict) or _is_own(message, bot_id, bot_user_id):
        return 0
    if not isinstance(previous, (dict, type(None))):
        previous = {}
    channel = event.get("channel")
    ts = message.get("ts")
    if not channel or not ts:
        return 0
    found = find_keys_in_text(_texts(message))
    if previous is not None:
        already = set(find_keys_in_text(_texts(previous)))
        found = [k for k in found if k not in already]
    warned = 0
    known = store.keys.find_by_secrets(found)  # every candidate, in one query: decoys hide nothing
    for secret in found:
        key = known.get(secret)
        if key is None:
            continue
        now = utcnow()
        status = key.status_at(now).value
        poster = message.get("user") or message.get("bot_id")
        recorded = store.audit.record_once(f"leak|{channel}|{ts}|{key.id}", EventInput(
            actor="apikeys", action=Action.KEY_LEAKED, key_id=key.id,
            details={"name": key.name, "key": key.masked, "owner": key.owner, "channel_id": channel,
                     "message_ts": ts, "posted_by": poster, "status": status},
        ))
        if recorded is None:
            continue  # a retried event, or the same key in an edit of the same message
        log.warning(fields(event="key_leaked", key_id=key.id, channel=channel, posted_by=poster, status=status))
        text, warning = blocks.leak_warning(key, message.get("user"), now)
        try:
            posted = client.chat_postMessage(channel=channel, thread_ts=message.get("thread_ts") or ts,
                                             text=text, blocks=warning, unfurl_links=False)
            if posted.get("ts"):  # kept true: when the key is revoked or rotated, the warning says so
                store.cards.keep([key.id], channel=posted.get("channel") or channel, ts=posted["ts"],
                                 kind="leak_warning", context={"poster": message.get("user")})
        except SlackApiError as exc:
            log.warning(fields(event="leak_warning", channel=channel, outcome=exc.response.get("error")))
        except Exception as exc:  # the audit record and its alert are already safe
            log.warning(fields(event="leak_warning", channel=channel, outcome=type(exc).__name__))
        warned += 1
    return warned


@guarded
def on_message(event: dict, client, context: BoltContext) -> None:
    # Bolt has already acknowledged the event (within 3 s); this runs after.
    warn_about_leaks(context["store"], event, client, context.bot_user_id, context.bot_id)


def register(app: App) -> None:
    app.event("message")(on_message)
