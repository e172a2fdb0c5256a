"""Buttons and selects. Each listener acks first, then answers through ``response_url``.

Nothing here reads ``body["message"]`` (Slack omits it for ephemeral messages): what a listener
needs travels in the button's value, and everything that grants anything is checked again on
the server (workspace, admin role, the key's state). The buttons that change anything are
declared behind middleware, in order: what they are about (``key_confirmation``), who may
(``require_admin``), once (``once``: a replay is refused), and while fresh (``fresh``); each refusal
is recorded and answered by ``authz.deny``. A new button that changes anything is one listener plus
its value model and its renderer, and declares the same middleware.
"""

from __future__ import annotations

import logging
import time

from slack_bolt import Ack, App, BoltContext, BoltResponse
from slack_sdk.errors import SlackApiError

from storage import Action, KeyNotFound, KeyStatus, Store
from storage.errors import InvalidInput
from storage.keys import check_reason
from storage.revocation import Via
from storage.rotation import DEFAULT_GRACE, GRACES
from storage.timeutil import utcnow

from ..logs import fields
from . import blocks, render
from .authz import Subject, deny, deny_after_ack, require_admin
from .context import Actor
from .errors import guarded
from .ids import ActionId, BlockId
from .values import BadValue, HistoryView, KeyAction, ListView, OwnerAction, decode, decode_page

log = logging.getLogger("apikeys.slack")

CONFIRMATION_TTL = 15 * 60  # seconds a confirmation card stays usable
STALE_BUTTON = "This button is out of date or was altered; run `/apikeys` again."
NOT_RENDERED = "the button's value is not one this app rendered"


def _first_action(body: dict) -> dict:
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        return actions[0]
    return {}


def _state(body: dict, block_id: BlockId, action_id: ActionId) -> dict:
    """One element's state in the card (``body["state"]["values"][block][action]``), or {}."""
    state = body.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    block = values.get(block_id.value) if isinstance(values, dict) else None
    element = block.get(action_id.value) if isinstance(block, dict) else None
    return element if isinstance(element, dict) else {}


def _selected(body: dict, block_id: BlockId, action_id: ActionId) -> str | None:
    """The option chosen in a select of the card."""
    option = _state(body, block_id, action_id).get("selected_option")
    value = option.get("value") if isinstance(option, dict) else None
    return value if isinstance(value, str) else None


def _selected_reason(body: dict) -> str | None:
    """The reason chosen in the card's select, from the interaction's ``state``."""
    return _selected(body, BlockId.REASON, ActionId.REASON)


def _note(body: dict) -> str | None:
    """The card's optional note (masked and bounded by storage like every note); too long: cut."""
    value = _state(body, BlockId.NOTE, ActionId.NOTE).get("value")
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[: blocks.NOTE_MAX]


def _admin(context: BoltContext) -> bool:
    """Whether buttons that change anything are shown to this user."""
    return context["actor"].sees_admin_buttons


def _chosen_reason(*candidates: str | None) -> str | None:
    """The first reason we know; an unknown one is ignored, not fatal: the revocation matters more."""
    try:
        chosen = check_reason(next((c for c in candidates if c), None))
    except InvalidInput:
        return None
    return chosen.value if chosen else None


def _stale(context: BoltContext, response_url: str | None) -> None:
    context["reply"].send(response_url, replace=False, text=STALE_BUTTON, blocks=blocks.text_message(STALE_BUTTON))


def _show(context: BoltContext, response_url: str | None, answer: render.Answer) -> None:
    context["reply"].send(response_url, replace=True, text=answer.text, blocks=answer.blocks)


# -- middleware: what a click is about (before require_admin, so a denial names it) ---------------
def key_click(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """``Revoke`` and ``Rotate``: the key the button names, in ``context["value"]`` and ``["subject"]``;
    a value we did not render, or a key that is gone, is answered as a stale button."""
    try:
        action = decode(KeyAction, _first_action(body).get("value"))
        key = context["store"].keys.get(action.key_id)
    except (BadValue, KeyNotFound):
        context["after_ack"](lambda: _stale(context, body.get("response_url")))
        return ack()
    context["value"], context["subject"] = action, Subject(key=key)
    return next()



def key_confirmation(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """``Revoke Key``: its value and its key, in ``context["value"]`` and ``context["subject"]``."""
    try:
        action = decode(KeyAction, _first_action(body).get("value"))
    except BadValue:
        deny_after_ack(context, body, NOT_RENDERED)
        return ack()
    try:
        key = context["store"].keys.get(action.key_id)
    except KeyNotFound:
        deny_after_ack(context, body, f"there is no key {action.key_id}", requested=action.key_id)
        return ack()
    context["value"], context["subject"] = action, Subject(key=key)
    return next()


def owner_confirmation(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """``Revoke N Keys``: its value, and the owner and count a denial names."""
    try:
        action = decode(OwnerAction, _first_action(body).get("value"))
    except BadValue:
        deny_after_ack(context, body, NOT_RENDERED)
        return ack()
    context["value"] = action
    context["subject"] = Subject(details={"owner": action.owner, "count": action.count})
    return next()


# -- middleware: each click that changes anything is processed once, and only while it is fresh ----
def once(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """Listener middleware: a click is processed once; a replayed request (the same trigger, action
    and user again, within Slack's 5-minute signature window) is refused and recorded."""
    actor: Actor = context["actor"]
    identity = "|".join(str(x) for x in (body.get("trigger_id"), _first_action(body).get("action_ts"), actor.user_id))
    if not context["store"].receipts.first_use("revoke-click|" + identity):
        deny_after_ack(context, body, "this click was already processed (a replayed request)", context.get("subject"))
        return ack()
    return next()


def fresh(context: BoltContext, body: dict, ack: Ack, next) -> BoltResponse | None:
    """Listener middleware, after the value is read: a confirmation is usable for CONFIRMATION_TTL
    after it was shown; one that does not say when it was shown is refused too."""
    issued_at = getattr(context.get("value"), "issued_at", None)
    if issued_at is None or not 0 <= time.time() - issued_at <= CONFIRMATION_TTL:
        deny_after_ack(context, body, f"this confirmation is more than {CONFIRMATION_TTL // 60} minutes old; "
                                      "open it again", context.get("subject"))
        return ack()
    return next()


def _post_notice(store: Store, client, channel_id: str | None, text: str) -> None:
    """A short notice where it happened, when the bot can post there (best effort)."""
    if not channel_id or channel_id == store.audit.notify_channel:
        return
    try:
        client.chat_postMessage(channel=channel_id, text=text)
    except SlackApiError as exc:
        log.info(fields(event="revoke_notice", channel=channel_id, outcome=exc.response.get("error")))
    except Exception as exc:  # network trouble: the audit channel post is the durable record
        log.info(fields(event="revoke_notice", channel=channel_id, outcome=type(exc).__name__))


# -- listeners --------------------------------------------------------------------------------
def _in_place(body: dict) -> bool:
    """A click on a public message (a leak warning) answers privately instead of replacing it."""
    container = body.get("container")
    return not (isinstance(container, dict) and container.get("is_ephemeral") is False)


@guarded
def open_confirmation(ack: Ack, body: dict, context: BoltContext) -> None:
    """``Revoke`` on a row, card or leak warning (behind key_click, require_admin): the confirmation,
    its reason preselected when the button carries one (a leak warning's: compromised)."""
    ack()
    action: KeyAction = context["value"]
    key = context["subject"].key
    response_url = body.get("response_url")
    if key.status_at(utcnow()) is KeyStatus.REVOKED:
        context["reply"].send(response_url, replace=_in_place(body), text="Already revoked",
                              blocks=blocks.already_revoked(key, action.view))
        return
    context["reply"].send(response_url, replace=_in_place(body), text=f"Revoke {key.name}?",
                          blocks=blocks.confirm_revoke(key, action.view, reason=_chosen_reason(action.reason),
                                                       issued_at=int(time.time())))


@guarded
def open_rotation(ack: Ack, body: dict, context: BoltContext) -> None:
    """``Rotate`` (behind key_click, require_admin): the rotation confirmation with its grace choice."""
    ack()
    action: KeyAction = context["value"]
    key = context["subject"].key
    response_url = body.get("response_url")
    status = key.status_at(utcnow())
    if status is not KeyStatus.ACTIVE or key.rotated_to is not None:
        why = (f"it was already rotated; its replacement is `{key.rotated_to}`" if key.rotated_to and status is KeyStatus.ACTIVE
               else f"it is {status.value}")
        text = f":information_source: *{blocks.esc(key.name)}* `{key.masked}` cannot be rotated: {why}. Nothing changed."
        context["reply"].send(response_url, replace=False, text="Not rotated", blocks=blocks.text_message(text))
        return
    leaked = any(e.action == Action.KEY_LEAKED for e in context["store"].audit.recent(limit=200, key_id=key.id))
    context["reply"].send(response_url, replace=_in_place(body), text=f"Rotate {key.name}?",
                          blocks=blocks.confirm_rotate(key, action.view, issued_at=int(time.time()),
                                                       public_url_missing=not context.get("public_url"), leaked=leaked))


@guarded
def show_history(ack: Ack, body: dict, context: BoltContext) -> None:
    """``History`` on a key card: that key's audit history."""
    ack()
    try:
        view = decode(HistoryView, _first_action(body).get("value"))
    except BadValue:
        _stale(context, body.get("response_url"))
        return
    answer = render.history(context["store"], view)
    context["reply"].send(body.get("response_url"), replace=_in_place(body), text=answer.text, blocks=answer.blocks)


@guarded
def cancel(ack: Ack, body: dict, context: BoltContext) -> None:
    """``Cancel Revoke Key``: back to the same page of the list."""
    ack()
    try:
        view = decode(KeyAction, _first_action(body).get("value")).view
    except BadValue:
        view = ListView()
    _show(context, body.get("response_url"), render.key_list(context["store"], view, admin=_admin(context)))


@guarded
def confirm(ack: Ack, body: dict, context: BoltContext, client) -> None:
    """``Revoke Key``: the only path that revokes one key (behind key_confirmation, require_admin)."""
    ack()
    store: Store = context["store"]
    actor: Actor = context["actor"]
    action: KeyAction = context["value"]
    key = context["subject"].key
    reason = _chosen_reason(_selected_reason(body), action.reason)
    outcome = store.keys.revoke(key.id, actor=actor.user_id, via=Via.SLACK, reason=reason, note=_note(body),
                                context=actor.where)
    log.info(fields(event="revoke", key_id=key.id, actor=actor.user_id, reason=reason,
                    outcome="revoked" if outcome.revoked_now else "already_revoked"))
    response_url = body.get("response_url")
    if not outcome.revoked_now:
        context["reply"].send(response_url, replace=True, text="Already revoked",
                              blocks=blocks.already_revoked(outcome.key, action.view))
        return
    context["reply"].send(response_url, replace=True, text=f"Revoked {outcome.key.name}",
               blocks=blocks.revoke_result(outcome.key, action.view))
    _post_notice(store, client, actor.channel_id, blocks.revoke_notice_text(outcome.key))


@guarded
def confirm_owner(ack: Ack, body: dict, context: BoltContext, client) -> None:
    """``Revoke N Keys``: revoke exactly the owner's keys that were shown (behind owner_confirmation,
    require_admin)."""
    ack()
    store: Store = context["store"]
    actor: Actor = context["actor"]
    action: OwnerAction = context["value"]
    reason = _chosen_reason(_selected_reason(body))
    revoked = store.keys.revoke_owner(action.owner, up_to=action.up_to, actor=actor.user_id, via=Via.SLACK,
                                      reason=reason, note=_note(body), context=actor.where)
    log.info(fields(event="revoke_owner", owner=action.owner, actor=actor.user_id, shown=action.count,
                    revoked=len(revoked)))
    context["reply"].send(body.get("response_url"), replace=True, text=f"Revoked {len(revoked)} keys of {action.owner}",
               blocks=blocks.owner_result(action.owner, revoked, action.count, actor.user_id, reason))
    if revoked:
        _post_notice(store, client, actor.channel_id,
                     f":no_entry: {len(revoked)} API keys of *{blocks.esc(action.owner)}* were revoked by "
                     f"<@{actor.user_id}>, reason: {blocks.reason_label(reason)}.")


@guarded
def confirm_rotation(ack: Ack, body: dict, context: BoltContext, client) -> None:
    """``Rotate Key`` (behind key_confirmation, require_admin, once, fresh): the replacement now, the old
    key ended after the grace chosen, and a one-time link to the new secret for this admin only."""
    ack()
    store: Store = context["store"]
    actor: Actor = context["actor"]
    action: KeyAction = context["value"]
    key = context["subject"].key
    public_url = context.get("public_url")
    if not public_url:  # a setting missing, not a refusal: said, nothing changed
        context["reply"].send(body.get("response_url"), replace=False, text="Not rotated",
                              blocks=blocks.text_message(f"{blocks.PUBLIC_URL_MISSING} Not rotated; nothing changed."))
        return
    chosen = _selected(body, BlockId.GRACE, ActionId.GRACE) or DEFAULT_GRACE
    if chosen not in GRACES:  # not a choice this app offered
        deny(context, body, NOT_RENDERED, context["subject"])
        return
    grace = GRACES[chosen]

    def seal(session, new_id: str, secret: str, now):
        return store.reveals.seal(session, key_id=new_id, secret=secret, for_user=actor.user_id, now=now)

    try:
        rotated = store.keys.rotate(key.id, actor=actor.user_id, via=Via.SLACK, grace=grace, note=_note(body),
                                    context=actor.where, seal=seal)
    except InvalidInput as exc:  # revoked, expired or rotated since the card was shown
        deny(context, body, str(exc), context["subject"])
        return
    log.info(fields(event="rotate", key_id=key.id, new_key_id=rotated.new.key.id, actor=actor.user_id,
                    grace=int(grace.total_seconds())))
    result = blocks.rotate_result(rotated.old, rotated.new.key, rotated.sealed.link(public_url),
                                  rotated.sealed.expires_at, action.view)
    if not context["reply"].send(body.get("response_url"), replace=True, text=f"Rotated {key.name}", blocks=result):
        _link_directly(client, actor.user_id, key.name, result)
    _post_notice(store, client, actor.channel_id, blocks.rotate_notice_text(rotated.old))


def _link_directly(client, user_id: str, name: str, result: list[dict]) -> None:
    """The card could not be answered (its response_url failed): the link must still reach the admin,
    or nobody holds the new key. Sent straight to them, never through the outbox (which is stored)."""
    try:
        client.chat_postMessage(channel=user_id, text=f"Rotated {name}", blocks=result, unfurl_links=False)
        log.warning(fields(event="rotate_link", user=user_id, outcome="sent_by_direct_message"))
    except Exception as exc:
        log.error(fields(event="rotate_link", user=user_id, outcome="undelivered", error=type(exc).__name__,
                         action="the link expires unviewed in 15 minutes and the admin is told; rotate again"))


@guarded
def choose_reason(ack: Ack) -> None:
    ack()  # the choice is read from the card's state when "Revoke Key" is clicked


@guarded
def page(ack: Ack, body: dict, context: BoltContext) -> None:
    """``Next``, ``Previous``, ``Back to keys`` and the bulk card's cancel: show the page the value names."""
    ack()
    try:
        view = decode_page(_first_action(body).get("value"))
    except BadValue:
        view = ListView()
    store: Store = context["store"]
    answer = (render.history(store, view) if isinstance(view, HistoryView)
              else render.key_list(store, view, admin=_admin(context)))
    _show(context, body.get("response_url"), answer)


@guarded
def unknown_action(ack: Ack, body: dict, context: BoltContext) -> None:
    ack()  # an element from an older version of the app: acknowledge, change nothing
    _stale(context, body.get("response_url"))


def register(app: App) -> None:
    # Opening a confirmation: admins only (the buttons are shown to admins only; a public leak warning's
    # Revoke is refused to anyone else at once, naming the admins to ask).
    app.action(ActionId.REVOKE.value, middleware=[key_click, require_admin])(open_confirmation)
    app.action(ActionId.ROTATE.value, middleware=[key_click, require_admin])(open_rotation)
    app.action(ActionId.pattern(ActionId.CANCEL_REVOKE, ActionId.CANCEL_ROTATE))(cancel)
    app.action(ActionId.HISTORY.value)(show_history)
    # What changes anything: what it is about, who may, once, while fresh (each refusal is recorded).
    app.action(ActionId.CONFIRM_REVOKE.value, middleware=[key_confirmation, require_admin, once, fresh])(confirm)
    app.action(ActionId.CONFIRM_REVOKE_OWNER.value,
               middleware=[owner_confirmation, require_admin, once, fresh])(confirm_owner)
    app.action(ActionId.CONFIRM_ROTATE.value, middleware=[key_confirmation, require_admin, once, fresh])(confirm_rotation)
    app.action(ActionId.pattern(ActionId.REASON, ActionId.GRACE, ActionId.NOTE))(choose_reason)
    app.action(ActionId.pattern(ActionId.PAGE_NEXT, ActionId.PAGE_PREV, ActionId.SHOW_LIST,
                                ActionId.CANCEL_REVOKE_OWNER))(page)
    app.action(ActionId.pattern())(unknown_action)  # last: any other element
