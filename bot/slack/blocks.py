"""Block Kit, built by pure functions with slack_sdk's models (which validate lengths and
shapes when serialised). Nothing here touches the network or the database, and no function
here ever receives a secret: keys are shown masked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
    TextObject,
)

from storage import ApiKey, AuditEvent, KeyStatus, RevokeReason
from storage.admins import USER_ID_RE, AdminEntry
from storage.keys import KeyPage
from storage.owners import OwnerEntry
from storage.rotation import DEFAULT_GRACE, GRACES
from storage.timeutil import iso

from ..logs import redact
from .ids import ActionId, BlockId
from .values import HistoryView, KeyAction, ListView, OwnerAction, encode

MAX_BLOCKS = 50
SECTION_TEXT_MAX = 3000  # Slack's limit for a section's text (and any text object)
FIELD_TEXT_MAX = 2000    # for each of a section's fields
KEYS_PER_PAGE = 15
EVENTS_PER_PAGE = 15
COUNT_CAP = 1000  # the list counts keys up to here ("1,000+"), so its cost stays flat
STATUS_TITLES = {"active": "Active API keys", "revoked": "Revoked API keys", "expired": "Expired API keys",
                 "all": "All API keys"}


# -- text helpers -------------------------------------------------------------------------------
def esc(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def when(moment: datetime | None, *, empty: str = "never") -> str:
    """A date Slack renders in the reader's time zone, with a UTC fallback."""
    if moment is None:
        return empty
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{iso(moment)}>"


def who(actor: str | None) -> str:
    """``<@U123>`` for Slack users, the recorded name for everyone else (CLI operators)."""
    if not actor:
        return "someone"
    return f"<@{actor}>" if USER_ID_RE.match(actor) else esc(actor)


def reason_label(reason: str | None) -> str:
    try:
        return RevokeReason(reason).label if reason else "not given"
    except ValueError:
        return esc(reason)


def fit(text: str, limit: int = SECTION_TEXT_MAX) -> str:
    """``text`` with anything key-shaped masked, *then* cut to ``limit`` characters (ending in "…").

    In this order because masking lengthens text (``apk_12345678`` becomes ``apk_…5678[redacted]``):
    text measured before masking can be over Slack's limit after it."""
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit_texts(block: Block) -> None:
    """Mask and cut every text of a section or context block to Slack's limits, before slack_sdk
    validates the lengths (``to_dict``) and before anything else measures them."""
    if isinstance(block, SectionBlock):
        if block.text is not None:
            block.text.text = fit(block.text.text)
        for item in block.fields or ():
            item.text = fit(item.text, FIELD_TEXT_MAX)
    elif isinstance(block, ContextBlock):
        for element in block.elements or ():
            if isinstance(element, TextObject):
                element.text = fit(element.text)


def serialise(blocks: Sequence[Block]) -> list[dict]:
    """Validated dicts within Slack's limits. As a last line of defence, anything shaped like a key is
    masked: in every text before it is measured (``fit``), and then in the whole output (button
    values, ids and all)."""
    if len(blocks) > MAX_BLOCKS:
        raise ValueError(f"{len(blocks)} blocks; Slack allows {MAX_BLOCKS}")
    for block in blocks:
        _fit_texts(block)
    return json.loads(redact(json.dumps([b.to_dict() for b in blocks], ensure_ascii=False)))


def text_message(text: str) -> list[dict]:
    return serialise([SectionBlock(text=MarkdownTextObject(text=text))])


# -- the key list ---------------------------------------------------------------------------
def state_line(key: ApiKey, now: datetime) -> str | None:
    """What happened to a key, in one line: revoked (who, when, why), rotating (who, when, until when,
    its replacement) or expired; None while it is simply active."""
    status = key.status_at(now)
    if status is KeyStatus.REVOKED:
        line = (f":no_entry: Revoked by {who(key.revoked_by)} at {when(key.revoked_at)}"
                f" ({reason_label(key.revoke_reason)})")
        return line + (f" · replaced by `{key.rotated_to}`" if key.rotated_to else "")
    if key.rotated_to is not None:
        prefix = ":repeat: Rotated" if status is KeyStatus.ACTIVE else ":hourglass: Rotated"
        ends = f"works until {when(key.expires_at)}" if status is KeyStatus.ACTIVE else f"ended {when(key.expires_at)}"
        return f"{prefix} by {who(key.rotated_by)} at {when(key.rotated_at)} · {ends} · replaced by `{key.rotated_to}`"
    if status is KeyStatus.EXPIRED:
        return f":hourglass: Expired {when(key.expires_at)}"
    return None


def _key_line(key: ApiKey, now: datetime) -> str:
    status = key.status_at(now)
    lines = [f"*{esc(key.name)}*  `{key.masked}`"]
    details = [f"Owner *{esc(key.owner)}*", f"`{key.id}`", f"created {when(key.created_at)}",
               f"last used {when(key.last_used_at)}"]
    if key.expires_at is not None and status is KeyStatus.ACTIVE and key.rotated_to is None:
        details.append(f"expires {when(key.expires_at)}")
    lines.append(" · ".join(details))
    if (state := state_line(key, now)) is not None:
        lines.append(state)
    return "\n".join(lines)


def revoke_button(key: ApiKey, view: ListView, reason: str | None = None) -> ButtonElement:
    return ButtonElement(text="Revoke", action_id=ActionId.REVOKE.value,
                         value=encode(KeyAction(key_id=key.id, view=view, reason=reason)))


def rotate_button(key: ApiKey, view: ListView) -> ButtonElement:
    return ButtonElement(text="Rotate", action_id=ActionId.ROTATE.value, value=encode(KeyAction(key_id=key.id, view=view)))


def history_button(key: ApiKey) -> ButtonElement:
    return ButtonElement(text="History", action_id=ActionId.HISTORY.value, value=encode(HistoryView(key_id=key.id)))


def key_row(key: ApiKey, view: ListView, now: datetime, *, admin: bool) -> SectionBlock:
    """A key's row; ``Revoke`` only for admins (buttons that change anything are shown to admins only)."""
    accessory = revoke_button(key, view) if admin and key.status_at(now) is KeyStatus.ACTIVE else None
    return SectionBlock(block_id=f"key_{key.id}", text=MarkdownTextObject(text=_key_line(key, now)), accessory=accessory)


def key_actions(key: ApiKey, view: ListView, now: datetime, *, admin: bool, history: bool = False) -> list[Block]:
    """The buttons under a key's row or card: ``Rotate`` (admins, an active key not yet rotated) and,
    on a card, ``History``."""
    elements = []
    if admin and key.status_at(now) is KeyStatus.ACTIVE and key.rotated_to is None:
        elements.append(rotate_button(key, view))
    if history:
        elements.append(history_button(key))
    return [ActionsBlock(block_id=f"keyactions_{key.id}", elements=elements)] if elements else []


def _pager(prev_value: str | None, next_value: str | None) -> list[Block]:
    buttons = []
    if prev_value:
        buttons.append(ButtonElement(text="Previous", action_id=ActionId.PAGE_PREV.value, value=prev_value))
    if next_value:
        buttons.append(ButtonElement(text="Next", action_id=ActionId.PAGE_NEXT.value, value=next_value))
    return [ActionsBlock(block_id=BlockId.PAGER.value, elements=buttons)] if buttons else []


def key_list(page: KeyPage, view: ListView, total: int, now: datetime, *, admin: bool) -> list[dict]:
    title = f"*{STATUS_TITLES[view.status]}*" + (f" of *{esc(view.owner)}*" if view.owner else "")
    shown_total = f"{COUNT_CAP:,}+" if total > COUNT_CAP else f"{total:,}"
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=f"{title} · {shown_total} in all"))]
    if not page.items:
        hint = "Create one with `apikeys create --name NAME --owner OWNER`." if view.status == "active" else ""
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"No keys to show. {hint}".strip())))
    else:
        blocks.append(DividerBlock())
        for key in page.items:
            blocks.append(key_row(key, view, now, admin=admin))
            blocks += key_actions(key, view, now, admin=admin)
        blocks.append(DividerBlock())
    blocks += _pager(
        encode(ListView(status=view.status, owner=view.owner, before=page.prev_cursor)) if page.prev_cursor else None,
        encode(ListView(status=view.status, owner=view.owner, after=page.next_cursor)) if page.next_cursor else None,
    )
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text="`/apikeys revoked` · `/apikeys all` · `/apikeys owner NAME` · `/apikeys history` · `/apikeys help`")]))
    return serialise(blocks)


# -- the revoke confirmation and its outcomes -------------------------------------------------
def _key_fields(key: ApiKey) -> list[MarkdownTextObject]:
    return [
        MarkdownTextObject(text=f"*Name*\n{esc(key.name)}"),
        MarkdownTextObject(text=f"*Key*\n`{key.masked}`"),
        MarkdownTextObject(text=f"*Owner*\n{esc(key.owner)}"),
        MarkdownTextObject(text=f"*Created*\n{when(key.created_at)}"),
        MarkdownTextObject(text=f"*Last used*\n{when(key.last_used_at)}"),
        MarkdownTextObject(text=f"*Expires*\n{when(key.expires_at)}"),
    ]


def _reason_options() -> list[Option]:
    return [Option(value=r.value, label=r.label) for r in RevokeReason]


NOTE_MAX = 500


def note_input() -> InputBlock:
    """The optional note of every confirmation (stored masked, like every note)."""
    return InputBlock(block_id=BlockId.NOTE.value, label="Note (optional)", optional=True,
                      element=PlainTextInputElement(action_id=ActionId.NOTE.value, max_length=NOTE_MAX,
                                                    placeholder="What happened, a ticket, who was told"))


def confirm_revoke(key: ApiKey, view: ListView, *, reason: str | None, issued_at: int) -> list[dict]:
    options = _reason_options()
    initial = next((o for o in options if o.value == reason), None)
    select = StaticSelectElement(
        action_id=ActionId.REASON.value, placeholder="Choose a reason", options=options, initial_option=initial
    )
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(
            text=f":warning: *Revoke {esc(key.name)}?*\nEvery service using this key will be refused at once, "
                 "on every server. *This cannot be undone.*")),
        SectionBlock(fields=_key_fields(key)),
        SectionBlock(block_id=BlockId.REASON.value, text=MarkdownTextObject(text="*Reason* (optional)"), accessory=select),
        note_input(),
        ActionsBlock(block_id=BlockId.CONFIRM_ACTIONS.value, elements=[
            ButtonElement(text="Cancel Revoke Key", action_id=ActionId.CANCEL_REVOKE.value,
                          value=encode(KeyAction(key_id=key.id, view=view))),
            ButtonElement(text="Revoke Key", action_id=ActionId.CONFIRM_REVOKE.value, style="danger",
                          value=encode(KeyAction(key_id=key.id, view=view, reason=reason, issued_at=issued_at))),
        ]),
    ]
    return serialise(blocks)


def _grace_options() -> list[Option]:
    return [Option(value=label, label=label) for label in GRACES]


def confirm_rotate(key: ApiKey, view: ListView, *, issued_at: int, public_url_missing: bool = False,
                   leaked: bool = False) -> list[dict]:
    """``Rotate``: the key, the grace period (default 24 hours; ``now`` for a key found leaked), a note,
    ``Cancel Rotate Key`` / ``Rotate Key``."""
    options = _grace_options()
    initial = "now" if leaked else DEFAULT_GRACE
    select = StaticSelectElement(action_id=ActionId.GRACE.value, placeholder="Grace period", options=options,
                                 initial_option=next(o for o in options if o.value == initial))
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(
            text=f":repeat: *Rotate {esc(key.name)}?*\nA replacement key is made now (same name, owner and lifetime). "
                 "This key keeps working for the grace period you choose, then stops for good; `now` revokes it at "
                 "once. You get the new key through a one-time link, never in Slack.")),
        SectionBlock(fields=_key_fields(key)),
        SectionBlock(block_id=BlockId.GRACE.value, text=MarkdownTextObject(text="*Old key keeps working for*"),
                     accessory=select),
        note_input(),
    ]
    if leaked:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=(
            ":rotating_light: This key was found leaked: whoever saw it can use it for as long as the grace "
            "period lasts, so `now` is chosen. Choose a grace only if you know it was not copied."))]))
    if public_url_missing:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=PUBLIC_URL_MISSING)]))
    blocks.append(ActionsBlock(block_id=BlockId.CONFIRM_ACTIONS.value, elements=[
        ButtonElement(text="Cancel Rotate Key", action_id=ActionId.CANCEL_ROTATE.value,
                      value=encode(KeyAction(key_id=key.id, view=view))),
        ButtonElement(text="Rotate Key", action_id=ActionId.CONFIRM_ROTATE.value, style="danger",
                      value=encode(KeyAction(key_id=key.id, view=view, issued_at=issued_at))),
    ]))
    return serialise(blocks)


PUBLIC_URL_MISSING = (":warning: Rotating from Slack needs `APIKEYS_PUBLIC_URL` (this server's public address, for the "
                      "one-time link to the new key): an operator sets it and restarts the server. Until then, "
                      "`apikeys rotate KEY_ID --actor NAME` on the command line prints the new key once.")


def rotate_result(old: ApiKey, new: ApiKey, link: str, link_expires: datetime, view: ListView) -> list[dict]:
    """The admin's ephemeral answer: what changed and the one-time link (never the secret)."""
    ends = ("was revoked at once" if old.revoked_at is not None else f"keeps working until {when(old.expires_at)}")
    return serialise([
        SectionBlock(text=MarkdownTextObject(
            text=f":white_check_mark: Rotated *{esc(old.name)}* (owner {esc(old.owner)}).\n"
                 f"New key `{new.id}` `{new.masked}`; the old key `{old.masked}` {ends}.")),
        SectionBlock(text=MarkdownTextObject(
            text=f":closed_lock_with_key: <{link}|Open the new key> — a one-time link: it shows the key once, to "
                 f"whoever opens it first, then never again, and expires {when(link_expires)} (15 minutes). Open it "
                 "yourself and do not forward it; put the key in the service's secret store, deploy, and the old "
                 "key can end.")),
        _back_to_list(view, new),
    ])


def _back_to_list(view: ListView, key: ApiKey | None = None) -> ActionsBlock:
    elements = [ButtonElement(text="Back to keys", action_id=ActionId.SHOW_LIST.value, value=encode(view))]
    if key is not None:
        elements.append(history_button(key))
    return ActionsBlock(elements=elements)


def revoke_result(key: ApiKey, view: ListView) -> list[dict]:
    return serialise([
        SectionBlock(text=MarkdownTextObject(
            text=f":white_check_mark: Revoked *{esc(key.name)}* `{key.masked}` (owner {esc(key.owner)}).\n"
                 f"By {who(key.revoked_by)} · {when(key.revoked_at)} · reason: {reason_label(key.revoke_reason)}\n"
                 "Any use of this key is now refused as unauthorized. To replace it, create a new key for the "
                 f"owner (`apikeys create --name {esc(key.name)} --owner {esc(key.owner)}`); next time, `Rotate` "
                 "gives a replacement with a grace period.")),
        _back_to_list(view, key),
    ])


def already_revoked(key: ApiKey, view: ListView) -> list[dict]:
    return serialise([
        SectionBlock(text=MarkdownTextObject(
            text=f":information_source: *{esc(key.name)}* `{key.masked}` is already revoked "
                 f"({when(key.revoked_at)} by {who(key.revoked_by)}). Nothing changed.")),
        _back_to_list(view, key),
    ])


def rotate_notice_text(key: ApiKey) -> str:
    ends = "was revoked at once" if key.revoked_at is not None else f"works until {when(key.expires_at)}"
    return fit(f":repeat: API key *{esc(key.name)}* `{key.masked}` (owner {esc(key.owner)}) was rotated by "
               f"{who(key.rotated_by)}: its replacement is `{key.rotated_to}`; the old key {ends}.")


def revoke_notice_text(key: ApiKey) -> str:
    return fit(f":no_entry: API key *{esc(key.name)}* `{key.masked}` (owner {esc(key.owner)}) was revoked by "
               f"{who(key.revoked_by)}, reason: {reason_label(key.revoke_reason)}.")


# -- breach response: find, leak warnings, revoke by owner ------------------------------------
def find_results(keys: Sequence[ApiKey], query: str, now: datetime, *, exact: bool, admin: bool) -> list[dict]:
    """A pasted full key shows its card (``exact``); a fragment shows the matching keys."""
    view = ListView()
    if exact:
        key = keys[0]
        status = key.status_at(now)
        headline = {KeyStatus.ACTIVE: ":large_green_circle: *Active*", KeyStatus.REVOKED: ":no_entry: *Revoked*",
                    KeyStatus.EXPIRED: ":hourglass: *Expired*"}[status]
        blocks: list[Block] = [
            SectionBlock(text=MarkdownTextObject(
                text=f"That is our key *{esc(key.name)}* `{key.masked}` — {headline}. "
                     "If it was pasted somewhere it should not be, revoke it and delete the message.")),
            key_row(key, view, now, admin=admin),
            *key_actions(key, view, now, admin=admin, history=True),
        ]
        return serialise(blocks)
    if not keys:
        return text_message(f"No keys match “{esc(query)}”. Try a name, the last four characters, "
                            "a masked key like `apk_…a1b2`, or paste the whole key.")
    blocks = [SectionBlock(text=MarkdownTextObject(text=f"*Keys matching “{esc(query)}”* · {len(keys)} shown"))]
    for key in keys:
        blocks.append(key_row(key, view, now, admin=admin))
        blocks += key_actions(key, view, now, admin=admin, history=True)
    return serialise(blocks[:MAX_BLOCKS])


def leak_warning(key: ApiKey, poster: str | None, now: datetime) -> tuple[str, list[dict]]:
    """The warning in the leak's thread. Rendered again (``chat.update``) when the key is revoked or
    rotated: then it says by whom, when and why, and has no live button."""
    status = key.status_at(now)
    by = f" posted by {who(poster)}" if poster else ""
    live = status is KeyStatus.ACTIVE and key.rotated_to is None
    if live:
        advice = "Anyone who can read this channel can use it. An admin should revoke it now, then delete the message."
    elif (state := state_line(key, now)) is not None:
        advice = f"{state}. Delete the message all the same."
    else:
        advice = f"It is already {status.value}, so it cannot be used; still, delete the message."
    text = (f":rotating_light: This message{by} contains the API key *{esc(key.name)}* `{key.masked}` "
            f"(owner *{esc(key.owner)}*). {advice}")
    blocks: list[Block] = [SectionBlock(
        text=MarkdownTextObject(text=text),
        # A leak's Revoke preselects the reason: compromised.
        accessory=revoke_button(key, ListView(), reason=RevokeReason.COMPROMISED.value) if live else None,
    )]
    return fit(f"API key {key.name} ({key.masked}) was posted in this channel"), serialise(blocks)


OWNER_NAMES_SHOWN = 20


def owner_confirm(owner: str, keys: Sequence[ApiKey], total: int, action: OwnerAction) -> list[dict]:
    names = ", ".join(f"*{esc(k.name)}* `{k.masked}`" for k in keys[:OWNER_NAMES_SHOWN])
    more = f" and {total - min(total, OWNER_NAMES_SHOWN):,} more" if total > OWNER_NAMES_SHOWN else ""
    options = _reason_options()
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(
            text=f":warning: *Revoke all {total:,} active keys of {esc(owner)}?*\nEvery service using them will be "
                 "refused at once. *This cannot be undone.* Keys created after this message are not included.")),
        SectionBlock(text=MarkdownTextObject(text=fit(names + more))),
        SectionBlock(block_id=BlockId.REASON.value, text=MarkdownTextObject(text="*Reason* (optional)"),
                     accessory=StaticSelectElement(action_id=ActionId.REASON.value, placeholder="Choose a reason",
                                                   options=options)),
        note_input(),
        ActionsBlock(block_id=BlockId.CONFIRM_ACTIONS.value, elements=[
            ButtonElement(text="Cancel Revoke Key", action_id=ActionId.CANCEL_REVOKE_OWNER.value,
                          value=encode(ListView(owner=owner))),
            ButtonElement(text=f"Revoke {total} Keys", action_id=ActionId.CONFIRM_REVOKE_OWNER.value,
                          style="danger", value=encode(action)),
        ]),
    ]
    return serialise(blocks)


def owner_result(owner: str, revoked: Sequence[ApiKey], shown: int, actor: str, reason: str | None) -> list[dict]:
    skipped = shown - len(revoked)
    extra = f" ({skipped} of those shown were already revoked or expired)" if skipped > 0 else ""
    return serialise([
        SectionBlock(text=MarkdownTextObject(
            text=f":white_check_mark: Revoked {len(revoked):,} keys of *{esc(owner)}*{extra}.\n"
                 f"By {who(actor)} · reason: {reason_label(reason)}\nAny use of them is now refused as unauthorized.")),
        _back_to_list(ListView(status="revoked", owner=owner)),
    ])


# -- help, admins, history --------------------------------------------------------------------
HELP_LINES = [
    ("/apikeys [list]", "active keys (admins: Revoke and Rotate on each)"),
    ("/apikeys revoked", "revoked keys: when, by whom, why"),
    ("/apikeys expired", "keys past their expiry"),
    ("/apikeys all", "every key, whatever its status"),
    ("/apikeys owner <owner>", "active keys of one owner"),
    ("/apikeys find <key or prefix>", "find a key from a pasted key, its last four characters or a name"),
    ("/apikeys history [key id or name]", "recent audit events: who, what, when, why"),
    ("/apikeys owners", "which channel is told about each owner's keys"),
    ("/apikeys revoke-owner <owner>", "revoke all active keys of an owner, after a confirmation (admins only)"),
    ("/apikeys admins", "who may revoke"),
    ("/apikeys admins add @user", "grant the admin role (admins only)"),
    ("/apikeys admins remove @user", "remove the admin role (admins only)"),
    ("/apikeys help", "this help"),
]
# The words /apikeys understands, declared once: here, in the help (tests hold the manifest's
# usage_hint to them; commands.answer refuses any other first word).
HELP_WORDS = frozenset(cmd.split()[1].strip("[]") for cmd, _ in HELP_LINES if " " in cmd)


def help_blocks(problem: str | None = None) -> list[dict]:
    blocks: list[Block] = []
    if problem:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f":grey_question: {esc(problem)}")))
    lines = "\n".join(f"`{esc(cmd)}` — {esc(what)}" for cmd, what in HELP_LINES)
    blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*apikeys* — manage and revoke API keys\n{lines}")))
    return serialise(blocks)


def admins_blocks(entries: Sequence[AdminEntry]) -> list[dict]:
    if not entries:
        return text_message("No admins yet. An operator can add one with `apikeys admins add USER_ID`.")
    lines = [
        f"• <@{e.user_id}> — " + ("from configuration (`APIKEYS_ADMINS`)" if e.source == "config"
                                  else f"added by {who(e.added_by)} {when(e.added_at)}")
        for e in entries
    ]
    return text_message("*Admins* (may revoke keys and manage admins)\n" + "\n".join(lines))


def owners_blocks(entries: Sequence[OwnerEntry]) -> list[dict]:
    if not entries:
        return text_message("No owner has a channel yet: revocations, rotations, leaks and expiries go to the audit "
                            "channel only. An operator sets one with `apikeys owners set OWNER --channel C…`.")
    lines = [f"• *{esc(e.owner)}* → <#{e.channel_id}> (set by {who(e.set_by)} {when(e.set_at)})" for e in entries]
    return text_message("*Owners' channels* (told when one of their keys is revoked, rotated, leaked, used after "
                        "revocation or about to expire)\n" + "\n".join(lines))


def _event_line(event: AuditEvent) -> str:
    details = json.loads(event.details)
    subject = ""
    if details.get("name") or details.get("key"):
        subject = f" *{esc(details.get('name', ''))}* `{esc(details.get('key', ''))}`"
    elif details.get("user_id"):
        subject = f" <@{esc(details['user_id'])}>"
    line = f"{when(event.at)} · {who(event.actor)} · `{event.action}`{subject}"
    if details.get("count"):
        line += f" ({details['count']} keys)"
    if event.action == "key.revoked":
        line += f" · reason: {reason_label(details.get('reason'))}"
    if event.action == "key.rotated":
        line += f" → `{esc(details.get('new_key_id', ''))}` · grace: {esc(details.get('grace', ''))}"
    if event.action == "key.checked":
        line += f" · checked by hand, answered `{esc(details.get('code', ''))}`"
    if details.get("why"):
        line += f" · {esc(details['why'])}"
    if details.get("note"):
        line += f" · “{esc(details['note'])}”"
    return line


def history_blocks(events: Sequence[AuditEvent], view: HistoryView, *, has_older: bool, has_newer: bool,
                   key: ApiKey | None) -> list[dict]:
    scope = f" of *{esc(key.name)}* `{key.masked}`" if key else ""
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=f"*Audit history*{scope}, newest first"))]
    if not events:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No events yet.")))
    else:
        # A section's text is at most 3000 characters: split over several sections when needed,
        # measuring each line as it will be sent (masked, then cut; masking makes text longer).
        chunk: list[str] = []
        size = 0
        for event in events:
            for line in _event_line(event).split("\n"):
                line = fit(line)
                if not line.strip() and not chunk:
                    continue  # a section cannot start with (or be) an empty line
                if chunk and size + 1 + len(line) > SECTION_TEXT_MAX:
                    blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(chunk))))
                    chunk, size = [], 0
                size += len(line) + (1 if chunk else 0)
                chunk.append(line)
        blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(chunk))))
    newer = encode(HistoryView(key_id=view.key_id, after_id=events[0].id)) if has_newer and events else None
    older = encode(HistoryView(key_id=view.key_id, before_id=events[-1].id)) if has_older and events else None
    blocks += _pager(newer, older)
    return serialise(blocks)
