"""Posts to an owner's channel (``apikeys owners set``) and the expiry digest: what happened to the
owner's keys, who did it, why, and what to do next. Pure functions over audit entries and key rows
(nothing here touches the network or the database); no secret is ever shown, only masked keys."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from storage import Action, ApiKey, AuditEvent, KeyStatus

from .blocks import MAX_BLOCKS, esc, fit, reason_label, serialise, state_line, when, who

SHOWN = 20  # entries or keys named in one post; the rest are counted


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _key(d: dict) -> str:
    return f"*{esc(d.get('name', ''))}* `{esc(d.get('key', ''))}`"


def _revoked(event: AuditEvent, d: dict) -> str:
    note = f" Note: “{esc(d['note'])}”." if d.get("note") else ""
    return (f":no_entry: {_key(d)} was *revoked* by {who(event.actor)} {when(event.at)}, reason: "
            f"{reason_label(d.get('reason'))}.{note}\n*What now:* every use of it is refused from this moment. "
            f"For a replacement, ask an apikeys admin (`/apikeys admins`) to create one (`apikeys create --name "
            f"{esc(d.get('name', ''))} --owner {esc(d.get('owner', ''))}`), put it in your secret store and deploy.")


def _rotated(event: AuditEvent, d: dict) -> str:
    if d.get("grace_seconds") == 0:
        ends = "The old key was *revoked at once*: anything still using it fails now."
    else:
        ends = f"The old key keeps working until {when(_parse_iso(d.get('ends_at')))} ({esc(d.get('grace', ''))})."
    note = f" Note: “{esc(d['note'])}”." if d.get("note") else ""
    holder = who(event.actor)
    how = ("it was printed once on their command line" if d.get("via") == "cli"
           else "through a one-time link made for them")
    return (f":repeat: {_key(d)} was *rotated* by {holder} {when(event.at)}. Its replacement is "
            f"`{esc(d.get('new_key_id', ''))}` `{esc(d.get('new_key', ''))}`. {ends}{note}\n*What now:* {holder} "
            f"holds the new key ({how}): get it from them through your secret store, deploy it, and check that "
            "nothing still uses the old one.")


def _leaked(event: AuditEvent, d: dict) -> str:
    if d.get("url") or d.get("source"):
        where = f"in public at {esc(d.get('url') or 'an unstated place')[:300]}"
    elif d.get("channel_id"):
        where = f"in <#{esc(d['channel_id'])}>" + (f", posted by {who(d['posted_by'])}" if d.get("posted_by") else "")
    else:
        where = "outside its service"
    if d.get("revoked"):
        state, next_step = "It was revoked at once (reason: Compromised).", "get a replacement from an apikeys admin."
    elif d.get("status") == "active":
        state = "It is *still active*: whoever saw it can use it."
        next_step = "ask an apikeys admin (`/apikeys admins`) to revoke or rotate it now, then delete the message."
    else:
        state, next_step = f"It was already {esc(d.get('status', ''))}.", "delete it where it was posted."
    return f":rotating_light: {_key(d)} was *found leaked* {where} {when(event.at)}. {state}\n*What now:* {next_step}"


def _used_after_revoke(event: AuditEvent, d: dict) -> str:
    return (f":rotating_light: {_key(d)}, revoked {when(_parse_iso(d.get('revoked_at')))} by {who(d.get('revoked_by'))}, "
            f"was *presented {d.get('uses', 0):,} time(s)* since (last {when(_parse_iso(d.get('last_at')))}).\n"
            "*What now:* something still uses it: a service you forgot, a copy in a script, or whoever took it. "
            "Find it and move it to the replacement.")


RENDERERS = {
    Action.KEY_REVOKED: _revoked,
    Action.KEY_ROTATED: _rotated,
    Action.KEY_LEAKED: _leaked,
    Action.KEY_USED_AFTER_REVOKE: _used_after_revoke,
}


def owner_post(owner: str, events: Sequence[AuditEvent]) -> tuple[str, list[dict]]:
    """One post for the entries of one append that concern ``owner``'s keys."""
    rotated = {e.key_id for e in events if e.action == Action.KEY_ROTATED}
    lines = []
    for event in events:
        details = json.loads(event.details)
        if event.action not in RENDERERS or details.get("owner") != owner:
            continue
        if event.action == Action.KEY_REVOKED and event.key_id in rotated:
            continue  # a rotation with a grace of now: its rotation line says so
        lines.append(RENDERERS[event.action](event, details))
    if not lines:
        return "", []
    shown = lines[:SHOWN]
    if len(lines) > SHOWN:
        shown.append(f"… and {len(lines) - SHOWN:,} more: `/apikeys history` or `apikeys audit` has each.")
    header = f"*About the keys of {esc(owner)}*"
    body: list[Block] = [SectionBlock(text=MarkdownTextObject(text=header))]
    body += [SectionBlock(text=MarkdownTextObject(text=fit(line, 2900))) for line in shown[:MAX_BLOCKS - 1]]
    first = shown[0].split("\n")[0]
    return fit(f"{owner}: {first}"), serialise(body)


def expiry_post(items: Sequence[tuple[str, int]], keys: Mapping[str, ApiKey], now: datetime) -> tuple[str, list[dict]]:
    """The digest: each key ending within its threshold, when, and how to replace it in time."""
    lines = []
    for key_id, days in items:
        key = keys.get(key_id)
        if key is None:
            continue
        state = state_line(key, now)
        if key.status_at(now) is not KeyStatus.ACTIVE or key.rotated_to is not None:
            lines.append(f"• *{esc(key.name)}* `{key.masked}` (owner {esc(key.owner)}): {state}")
            continue
        lines.append(f"• *{esc(key.name)}* `{key.masked}` (owner {esc(key.owner)}, `{key.id}`) expires "
                     f"{when(key.expires_at)}: within {days} day{'s' if days != 1 else ''}")
    if not lines:
        return "", []
    shown = lines[:SHOWN * 2]
    if len(lines) > len(shown):
        shown.append(f"… and {len(lines) - len(shown):,} more: `apikeys list --status active` shows each expiry.")
    text = (f":hourglass_flowing_sand: *{len(lines)} key{'s' if len(lines) != 1 else ''} expiring soon*\n"
            + "\n".join(shown)
            + "\n*What now:* rotate each before it ends (an admin: `Rotate` in `/apikeys`, or `apikeys rotate KEY_ID "
              "--actor YOU`), deploy the new key, and let the old one end.")
    return fit(f"{len(lines)} API keys expiring soon"), serialise([SectionBlock(text=MarkdownTextObject(
        text=fit(text, 2900)))])
