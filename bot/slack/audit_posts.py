"""The audit channel's posts: one renderer per audit action (``AUDIT_POSTS``, complete by test),
built with the same helpers as every other message (``blocks``). Pure functions: nothing here
touches the network or the database, and no key is ever shown unmasked."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from storage import Action, ApiKey, AuditEvent
from storage.keys import KEY_ID_RE
from storage.timeutil import utcnow

from ..witness import witness_text
from .blocks import esc, fit, reason_label, serialise, state_line, when, who
from .ids import ActionId
from .values import KeyAction, ListView, encode


class _Post:
    """What every audit-channel renderer needs from one audited action (one or more entries)."""

    def __init__(self, events: Sequence[AuditEvent], keys: Mapping[str, ApiKey] | None = None,
                 current: Mapping[str, ApiKey] | None = None):
        self.events = events
        self.current = current or {}  # when the post is rendered again (chat.update): its keys as they are now
        self.first = events[0]
        self.details: dict = json.loads(self.first.details)
        d = self.details
        self.by = f"By {who(self.first.actor)} · {when(self.first.at)}"
        self.where = f" · in <#{d['channel_id']}>" if d.get("channel_id") else ""
        self.via = " · via CLI" if d.get("via") == "cli" else ""
        self.key_ref = self._key_ref(d, (keys or {}).get(self.first.key_id or ""))

    def _key_ref(self, d: dict, key: ApiKey | None) -> str:
        """The key an entry is about: its name, masked key and owner as the entry recorded them,
        else as the key's row has them (an entry that names only ``key_id``), else its id."""
        if d.get("key") or d.get("name"):
            return f"*{esc(d.get('name', ''))}* `{esc(d.get('key', ''))}` (owner {esc(d.get('owner', ''))})"
        if key is not None:
            return f"*{esc(key.name)}* `{esc(key.masked)}` (owner {esc(key.owner)})"
        return f"key `{esc(self.first.key_id or 'unknown')}`"

    def names(self, shown: int = 10) -> str:
        names = ", ".join(f"*{esc(json.loads(e.details).get('name', ''))}*" for e in self.events[:shown])
        return names + (f" and {len(self.events) - shown} more" if len(self.events) > shown else "")


def _post_revoked(p: _Post) -> str:
    d = p.details
    reason = f"By {who(p.first.actor)} · reason: {reason_label(d.get('reason'))} · {when(p.first.at)}{p.where}{p.via}"
    if len(p.events) > 1:
        return f":no_entry: *{len(p.events)} keys revoked* of owner {esc(d.get('owner', ''))}: {p.names()}\n{reason}"
    note = f"\nNote: “{esc(d['note'])}”" if d.get("note") else ""
    return f":no_entry: *Key revoked*: {p.key_ref}\n{reason}{note}"


def _post_rotated(p: _Post) -> str:
    """``key.rotated`` (with the replacement's ``key.created`` and, for a grace of now, ``key.revoked``)."""
    d = p.details
    if d.get("grace_seconds") == 0:
        ends = "revoked at once (reason: Rotation)"
    else:
        ends = f"keeps working for {esc(d.get('grace', ''))}, until {when(_parse_iso(d.get('ends_at')))}"
    note = f"\nNote: “{esc(d['note'])}”" if d.get("note") else ""
    return (f":repeat: *Key rotated*: {p.key_ref}\nReplacement `{esc(d.get('new_key_id', ''))}` "
            f"`{esc(d.get('new_key', ''))}` · the old key {ends}\n{p.by}{p.where}{p.via}{note}")


def _post_refused(verb: str):
    def render(p: _Post) -> str:
        return _post_revoke_denied(p, verb)
    return render


def _post_secret_revealed(p: _Post) -> str:
    d = p.details
    return (f":eyes: *New key viewed*: the one-time link to {p.key_ref}, made for {who(d.get('link_for'))}, was "
            f"opened; it shows nothing again · {when(p.first.at)}")


def _post_reveal_expired(p: _Post) -> str:
    d = p.details
    return (f":hourglass: *One-time link expired unviewed*: {p.key_ref}, made for {who(d.get('link_for'))}; its "
            f"secret is gone, so nobody has that key. Rotate it again for a new link · {when(p.first.at)}")


def _post_owner_channel(p: _Post) -> str:
    d = p.details
    owner = esc(d.get("owner", ""))
    if p.first.action == Action.OWNER_CHANNEL_REMOVED:
        return f":mega: *Owner channel removed*: *{owner}* is no longer told in <#{esc(d.get('channel_id', ''))}>\n{p.by}"
    was = f" (was <#{esc(d['previous_channel_id'])}>)" if d.get("previous_channel_id") else ""
    return f":mega: *Owner channel set*: *{owner}* is told in <#{esc(d.get('channel_id', ''))}>{was}\n{p.by}"


def _post_revoke_denied(p: _Post, verb: str = "Revoke") -> str:
    d = p.details
    if d.get("key"):
        target = p.key_ref
    elif d.get("owner"):
        count = f" {d['count']}" if d.get("count") else ""
        target = f"all{count} active keys of *{esc(d['owner'])}*"
    else:
        target = f"`{esc(d.get('requested_key_id') or p.first.key_id or 'an unknown key')}`"
    return (f":warning: *{verb} refused*: {who(p.first.actor)} tried to {verb.lower()} {target}\n"
            f"Why: {esc(d.get('why', 'not allowed'))} · {when(p.first.at)}{p.where}{_since_last_post(d)}")


def _since_last_post(d: dict) -> str:
    """A refusal post is a summary: the same user's refusals since their last post (recorded, not posted)."""
    count = d.get("refused_since_last_post")
    if not isinstance(count, int) or count <= 0:
        return ""
    return f"\nAlso {count} more refusal{'s' if count != 1 else ''} of theirs since the last post (`apikeys audit` has each)"


def _post_command_denied(p: _Post) -> str:
    d = p.details
    target = f" <@{esc(d['user_id'])}>" if d.get("user_id") else ""
    return (f":warning: *Command refused*: {who(p.first.actor)} · `/apikeys {esc(d.get('command', ''))}`{target}\n"
            f"Why: {esc(d.get('why', 'not allowed'))} · {when(p.first.at)}{p.where}{_since_last_post(d)}")


def _post_created(p: _Post) -> str:
    d = p.details
    if len(p.events) > 1:
        last = json.loads(p.events[-1].details)
        return (f":key: *{len(p.events)} keys created* for owner {esc(d.get('owner', ''))}: "
                f"*{esc(d.get('name', ''))}* … *{esc(last.get('name', ''))}*\n{p.by}")
    expires = f" · expires {when(_parse_iso(d.get('expires_at')))}" if d.get("expires_at") else ""
    return f":key: *Key created*: {p.key_ref}\n{p.by}{expires}"


def _post_leaked(p: _Post) -> str | tuple[str, list[Block]]:
    d = p.details
    if "url" in d or "source" in d:
        return _post_public_leaks(p)
    poster = f" by {who(d['posted_by'])}" if d.get("posted_by") else ""
    now_line = _now_line(p.current.get(p.first.key_id or ""), p.first.at)
    if now_line is not None:
        status = now_line
    else:
        status = ("Still active: revoke it with `/apikeys find`" if d.get("status") == "active"
                  else "Status: " + esc(d.get("status", "")))
    return (f":rotating_light: *Key leaked*: {p.key_ref} was posted in <#{esc(d.get('channel_id', ''))}>{poster}\n"
            f"{status} · {when(p.first.at)}")


PUBLIC_LEAKS_SHOWN = 20


def _now_line(key: ApiKey | None, at: datetime) -> str | None:
    """What happened to the key since the post was first made (revoked, rotated), or None."""
    if key is None or (key.revoked_at is None and key.rotated_to is None):
        return None
    return state_line(key, max(at, utcnow()))


def _public_leak_row(event: AuditEvent, key: ApiKey | None = None) -> SectionBlock:
    d = json.loads(event.details)
    where = esc(d.get("url") or "an unstated place")[:300]
    if d.get("source"):
        where += f" ({esc(d['source'])[:100]})"
    now_line = _now_line(key, event.at)
    still_active = (now_line is None and d.get("status") == "active" and not d.get("revoked")
                    and bool(KEY_ID_RE.match(event.key_id or "")))
    if now_line is not None and not d.get("revoked"):
        state = now_line
    elif d.get("revoked"):
        state = ":no_entry: revoked now, reason: Compromised"
    elif still_active:
        state = ":warning: *still active*"
    else:
        state = f"already {esc(d.get('status', ''))}"
    button = ButtonElement(text="Revoke", action_id=ActionId.REVOKE.value,
                           value=encode(KeyAction(key_id=event.key_id, view=ListView()))) if still_active else None
    return SectionBlock(
        block_id=f"leak_{event.id}",
        text=MarkdownTextObject(text=f"*{esc(d.get('name', ''))}* `{esc(d.get('key', ''))}` (owner {esc(d.get('owner', ''))})"
                                     f" · {state}\nFound at {where}"),
        accessory=button)


def _post_public_leaks(p: _Post) -> tuple[str, list[Block]]:
    """One post for one report (a GitHub alert, or ``apikeys leak report``): each key, masked, its owner,
    where it was found, and a ``Revoke`` button where it is still active."""
    leaked = [e for e in p.events if e.action == Action.KEY_LEAKED]
    details = [json.loads(e.details) for e in leaked]
    by = "by GitHub secret scanning" if p.first.actor == "github-secret-scanning" else f"reported by {who(p.first.actor)}"
    count = f"{len(leaked)} keys" if len(leaked) != 1 else "A key"
    revoked = sum(1 for d in details if d.get("revoked"))
    live = [e for e, d in zip(leaked, details, strict=True) if d.get("status") == "active" and not d.get("revoked")]
    active = sum(1 for e in live if _now_line(p.current.get(e.key_id or ""), e.at) is None)
    since = len(live) - active
    summary = [f"{revoked} revoked now"] if revoked else []
    summary += [f"{since} revoked or rotated since"] if since else []
    summary += [f"{active} still active"] if active else []
    if len(details) - revoked - active - since:
        summary.append(f"{len(details) - revoked - active - since} already revoked or expired")
    headline = f":rotating_light: *{count} found in public* {by}"
    rows: list[Block] = [SectionBlock(text=MarkdownTextObject(
        text=f"{headline}\n{' · '.join(summary)} · {when(p.first.at)}"))]
    rows += [_public_leak_row(e, p.current.get(e.key_id or "")) for e in leaked[:PUBLIC_LEAKS_SHOWN]]
    if len(leaked) > PUBLIC_LEAKS_SHOWN:
        rows.append(SectionBlock(text=MarkdownTextObject(
            text=f"… and {len(leaked) - PUBLIC_LEAKS_SHOWN:,} more: `apikeys audit` lists every one")))
    return f"{count} found in public {by}: {', '.join(d.get('name', '') for d in details[:10])}", rows


def _post_used_after_revoke(p: _Post) -> str:
    d = p.details
    return (f":rotating_light: *Revoked key presented*: {p.key_ref}\n"
            f"{d.get('uses', 0):,} use(s) since it was revoked {when(_parse_iso(d.get('revoked_at')))}"
            f" by {who(d.get('revoked_by'))} · last at {when(_parse_iso(d.get('last_at')))}"
            f" · via {esc(d.get('via', 'verify'))}\nWhoever holds it is still trying to use it.")


def _post_checked(p: _Post) -> str:
    code = p.details.get("code", "?")
    note = ("\nAn operator's check with the key in hand: not counted as a use, no alert."
            if code == "REVOKED" else "")
    return f":mag: *Key checked by hand*: {p.key_ref} answered `{esc(code)}`{note}\n{p.by}"


def _post_admin(verb: str):
    def render(p: _Post) -> str:
        return f":bust_in_silhouette: <@{esc(p.details.get('user_id', ''))}> {verb}\n{p.by}"
    return render


def _post_token(verb: str):
    """An admin token of the management API created or revoked: its name, masked token and scopes."""
    def render(p: _Post) -> str:
        d = p.details
        scopes = ", ".join(f"`{esc(str(s))}`" for s in d.get("scopes") or [])
        expires = f" · expires {when(_parse_iso(d.get('expires_at')))}" if d.get("expires_at") else ""
        return (f":key: *Admin token {verb}*: *{esc(str(d.get('name', '')))}* `{esc(str(d.get('token', '')))}` "
                f"(`{esc(p.first.key_id or '')}`) · scopes {scopes or 'none'}{expires}\n{p.by}")
    return render


def _post_tamper(p: _Post) -> str:
    """Someone other than apikeys changed its tables: what was found, and where to look."""
    problem = esc(str(p.details.get("problem", "an unexplained change")))[:2500]
    return (f":rotating_light: *Tamper detected*: {problem}\n"
            f"Found by {who(p.first.actor)} · {when(p.first.at)} · check with `apikeys audit --verify` and "
            "`apikeys db status`")


def _post_signing_started(p: _Post) -> str:
    return (f":lock: *Audit signing started*: {esc(str(p.details.get('problem', '')))[:2500]}\n"
            f"{when(p.first.at)}")


def _post_revocation_restored(p: _Post) -> str:
    d = p.details
    return (f":rotating_light: *Revocation restored*: {p.key_ref} was valid again although audit entry "
            f"#{esc(str(d.get('entry', '?')))} revoked it at {when(_parse_iso(d.get('revoked_at')))}: someone changed "
            f"the table outside apikeys. Revoked again from the log's entry · {when(p.first.at)}")


def _post_other(p: _Post) -> str:
    """An action this version has no renderer for (one recorded by a newer release)."""
    subject = f": {p.key_ref}" if p.details.get("key") else ""
    return f"*{esc(p.first.action)}*{subject}\n{p.by}"


AUDIT_POSTS: dict[Action, Callable[[_Post], str | tuple[str, list[Block]]]] = {
    Action.KEY_CREATED: _post_created,
    Action.KEY_REVOKED: _post_revoked,
    Action.KEY_REVOKE_DENIED: _post_revoke_denied,
    Action.KEY_LEAKED: _post_leaked,
    Action.KEY_USED_AFTER_REVOKE: _post_used_after_revoke,
    Action.KEY_CHECKED: _post_checked,
    Action.ADMIN_ADDED: _post_admin("is now an admin"),
    Action.ADMIN_REMOVED: _post_admin("is no longer an admin"),
    Action.COMMAND_DENIED: _post_command_denied,
    Action.TAMPER_DETECTED: _post_tamper,
    Action.SIGNING_STARTED: _post_signing_started,
    Action.KEY_REVOCATION_RESTORED: _post_revocation_restored,
    Action.KEY_ROTATED: _post_rotated,
    Action.KEY_ROTATE_DENIED: _post_refused("Rotate"),
    Action.KEY_SECRET_REVEALED: _post_secret_revealed,
    Action.KEY_REVEAL_EXPIRED: _post_reveal_expired,
    Action.OWNER_CHANNEL_SET: _post_owner_channel,
    Action.OWNER_CHANNEL_REMOVED: _post_owner_channel,
    Action.TOKEN_CREATED: _post_token("created"),
    Action.TOKEN_REVOKED: _post_token("revoked"),
}


def audit_post(events: Sequence[AuditEvent], keys: Mapping[str, ApiKey] | None = None, *,
               current: Mapping[str, ApiKey] | None = None) -> tuple[str, list[dict]]:
    """One audit-channel post for one audited action (which may cover several entries). ``keys``:
    the keys of entries that name only a ``key_id`` (``keys_named_only_by_id``), by id. ``current``:
    when a post is rendered again because a key it shows changed (``chat.update``), its keys as they
    are now: a leak post then says who revoked or rotated the key, and has no live button for it."""
    post = _Post(events, keys, current)
    rendered = AUDIT_POSTS.get(post.first.action, _post_other)(post)  # StrEnum keys: a stored string finds its renderer
    if isinstance(rendered, str):  # most posts are one section; a few bring their own blocks (and buttons)
        text, body = rendered.split("\n")[0], [SectionBlock(text=MarkdownTextObject(text=rendered))]
    else:
        text, body = rendered
    last = events[-1]  # the post witnesses the log's position and head after the entries it reports
    witness = ContextBlock(elements=[MarkdownTextObject(text=witness_text(last.id, last.hash))])
    return fit(text), serialise([*body, witness])


def live_keys(events: Sequence[AuditEvent]) -> list[str]:
    """The keys a post shows as still active (a leak it reports): the posts to keep true when they change."""
    out = []
    for event in events:
        if event.action != Action.KEY_LEAKED or not KEY_ID_RE.match(event.key_id or ""):
            continue
        details = json.loads(event.details)
        if details.get("status") == "active" and not details.get("revoked"):
            out.append(event.key_id)
    return out


def keys_named_only_by_id(events: Sequence[AuditEvent]) -> list[str]:
    """The key ids of entries whose details do not name their key (``key.revocation_restored`` as
    the self-check may write it: ``revoked_at`` and ``entry`` only): the deliverer looks them up."""
    out = []
    for event in events[:1]:  # a post names the key of its first entry
        try:
            details = json.loads(event.details)
        except ValueError:
            continue
        if event.key_id and isinstance(details, dict) and not (details.get("key") or details.get("name")):
            out.append(event.key_id)
    return out


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
