"""Buttons and selects. Each handler acks first, then answers through ``response_url``.

Nothing here reads ``body["message"]`` (Slack omits it for ephemeral messages): what a handler
needs travels in the button's value, and everything that grants anything is checked again on
the server (workspace, admin role, the key's state).
"""

from __future__ import annotations

import logging
import re
import time

from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError

from storage import Action, EventInput, KeyNotFound, KeyStatus, Store
from storage.errors import InvalidInput
from storage.keys import check_reason
from storage.timeutil import utcnow

from ..logs import fields
from . import blocks, reply
from .commands import render_history, render_list
from .context import Actor
from .errors import guarded
from .ids import ActionId, BlockId
from .views import BadValue, HistoryView, ListView, decode_key_action, decode_owner_action, decode_page

log = logging.getLogger("apikeys.slack")

CONFIRMATION_TTL = 15 * 60  # seconds a confirmation card stays usable
STALE_BUTTON = "This button is out of date or was altered; run `/apikeys` again."


def _first_action(body: dict) -> dict:
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        return actions[0]
    return {}


def _selected_reason(body: dict) -> str | None:
    """The reason chosen in the card's select, from the interaction's ``state``."""
    state = body.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    block = values.get(BlockId.REASON.value) if isinstance(values, dict) else None
    element = block.get(ActionId.REASON.value) if isinstance(block, dict) else None
    option = element.get("selected_option") if isinstance(element, dict) else None
    value = option.get("value") if isinstance(option, dict) else None
    return value if isinstance(value, str) else None


class RevokeFlow:
    def __init__(self, store: Store):
        self.store = store

    # -- "Revoke" on a row: show the confirmation ----------------------------------------------
    def open_confirmation(self, body: dict, actor: Actor) -> None:
        response_url = body.get("response_url")
        try:
            action = decode_key_action(_first_action(body).get("value"))
            key = self.store.keys.get(action.key_id)
        except (BadValue, KeyNotFound):
            reply.send(response_url, replace=False, text=STALE_BUTTON, blocks=blocks.text_message(STALE_BUTTON))
            return
        view = action.view
        # A click on a public message (a leak warning) opens the confirmation privately instead.
        container = body.get("container")
        in_place = not (isinstance(container, dict) and container.get("is_ephemeral") is False)
        if key.status_at(utcnow()) is KeyStatus.REVOKED:
            reply.send(response_url, replace=in_place, text="Already revoked", blocks=blocks.already_revoked(key, view))
            return
        reply.send(response_url, replace=in_place, text=f"Revoke {key.name}?",
                   blocks=blocks.confirm_revoke(key, view, reason=None, issued_at=int(time.time())))

    # -- "Cancel Revoke Key": back to the same page ---------------------------------------------
    def cancel(self, body: dict, actor: Actor) -> None:
        try:
            view = decode_key_action(_first_action(body).get("value")).view
        except BadValue:
            view = ListView()
        self._show_list(body.get("response_url"), view)

    def _show_list(self, response_url: str | None, view: ListView) -> None:
        try:
            answer = render_list(self.store, view)
        except InvalidInput:  # a cursor that does not parse: start from the first page
            answer = render_list(self.store, view.first_page())
        reply.send(response_url, replace=True, text=answer.text, blocks=answer.blocks)

    # -- "Revoke Key": the only path that changes anything ---------------------------------------
    def confirm(self, body: dict, actor: Actor, client) -> None:
        response_url = body.get("response_url")
        action_info = _first_action(body)
        try:
            action = decode_key_action(action_info.get("value"))
        except BadValue:
            self._deny(actor, response_url, None, "the button's value is not one this app rendered")
            return
        try:
            key = self.store.keys.get(action.key_id)
        except KeyNotFound:
            self._deny(actor, response_url, None, f"there is no key {action.key_id}", requested=action.key_id)
            return
        refusal = actor.refusal()
        if refusal:
            self._deny(actor, response_url, key, refusal)
            return
        if not self._fresh_click(body, action_info, actor, action.issued_at, response_url, key):
            return
        try:  # a reason we don't know is ignored, not fatal: the revocation matters more
            chosen = check_reason(_selected_reason(body) or action.reason)
        except InvalidInput:
            chosen = None
        reason = chosen.value if chosen else None
        outcome = self.store.keys.revoke(
            key.id, actor=actor.user_id, reason=reason,
            context={"via": "slack", "channel_id": actor.channel_id, "team_id": actor.user_team_id},
        )
        log.info(fields(event="revoke", key_id=key.id, actor=actor.user_id, reason=reason,
                        outcome="revoked" if outcome.revoked_now else "already_revoked"))
        if not outcome.revoked_now:
            reply.send(response_url, replace=True, text="Already revoked",
                       blocks=blocks.already_revoked(outcome.key, action.view))
            return
        reply.send(response_url, replace=True, text=f"Revoked {outcome.key.name}",
                   blocks=blocks.revoke_result(outcome.key, action.view))
        self._post_notice(client, actor.channel_id, blocks.revoke_notice_text(outcome.key))

    # -- "Revoke N Keys": revoke exactly the owner's keys that were shown -------------------------
    def confirm_owner(self, body: dict, actor: Actor, client) -> None:
        response_url = body.get("response_url")
        action_info = _first_action(body)
        try:
            action = decode_owner_action(action_info.get("value"))
        except BadValue:
            self._deny(actor, response_url, None, "the button's value is not one this app rendered")
            return
        owner_details = {"owner": action.owner, "count": action.count}
        refusal = actor.refusal()
        if refusal:
            self._deny(actor, response_url, None, refusal, extra=owner_details)
            return
        if not self._fresh_click(body, action_info, actor, action.issued_at, response_url, None, owner_details):
            return
        try:
            chosen = check_reason(_selected_reason(body))
        except InvalidInput:
            chosen = None
        revoked = self.store.keys.revoke_owner(
            action.owner, up_to=action.up_to, actor=actor.user_id, reason=chosen,
            context={"via": "slack", "channel_id": actor.channel_id, "team_id": actor.user_team_id},
        )
        log.info(fields(event="revoke_owner", owner=action.owner, actor=actor.user_id, shown=action.count,
                        revoked=len(revoked)))
        reason = chosen.value if chosen else None
        reply.send(response_url, replace=True, text=f"Revoked {len(revoked)} keys of {action.owner}",
                   blocks=blocks.owner_result(action.owner, revoked, action.count, actor.user_id, reason))
        if revoked:
            self._post_notice(client, actor.channel_id,
                              f":no_entry: {len(revoked)} API keys of *{blocks.esc(action.owner)}* were revoked by "
                              f"<@{actor.user_id}>, reason: {blocks.reason_label(reason)}.")

    def _fresh_click(self, body, action_info, actor, issued_at, response_url, key, extra=None) -> bool:
        """Refuse replayed requests and confirmations older than CONFIRMATION_TTL."""
        identity = "|".join(str(x) for x in (body.get("trigger_id"), action_info.get("action_ts"), actor.user_id))
        if not self.store.receipts.first_use("revoke-click|" + identity):
            self._deny(actor, response_url, key, "this click was already processed (a replayed request)", extra=extra)
            return False
        if issued_at is None or not 0 <= time.time() - issued_at <= CONFIRMATION_TTL:
            self._deny(actor, response_url, key,
                       f"this confirmation is more than {CONFIRMATION_TTL // 60} minutes old; open it again", extra=extra)
            return False
        return True

    def _deny(self, actor: Actor, response_url: str | None, key, why: str, requested: str | None = None,
              extra: dict | None = None) -> None:
        details = {"why": why, "channel_id": actor.channel_id, "team_id": actor.user_team_id, **(extra or {})}
        if key is not None:
            details.update(name=key.name, key=key.masked, owner=key.owner)
        if requested:
            details["requested_key_id"] = requested[:40]
        self.store.audit.record(EventInput(actor=actor.user_id or "unknown", action=Action.KEY_REVOKE_DENIED,
                                           key_id=key.id if key is not None else None, details=details))
        log.info(fields(event="revoke", key_id=key.id if key else None, actor=actor.user_id, outcome="denied", why=why))
        message = f":no_entry_sign: Not revoked: {why[0].upper() + why[1:]}. Nothing changed."
        reply.send(response_url, replace=False, text=message, blocks=blocks.text_message(message))

    def _post_notice(self, client, channel_id: str | None, text: str) -> None:
        """A short notice where it happened, when the bot can post there (best effort)."""
        audit_channel = self.store.audit.notify_channel
        if not channel_id or channel_id == audit_channel:
            return
        try:
            client.chat_postMessage(channel=channel_id, text=text)
        except SlackApiError as exc:
            log.info(fields(event="revoke_notice", channel=channel_id, outcome=exc.response.get("error")))
        except Exception as exc:  # network trouble: the audit channel post is the durable record
            log.info(fields(event="revoke_notice", channel=channel_id, outcome=type(exc).__name__))


def register(app: App, store: Store) -> None:
    flow = RevokeFlow(store)

    @app.action(ActionId.REVOKE.value)
    @guarded
    def on_revoke(ack: Ack, body: dict, context) -> None:
        ack()
        flow.open_confirmation(body, context["actor"])

    @app.action(ActionId.CANCEL_REVOKE.value)
    @guarded
    def on_cancel(ack: Ack, body: dict, context) -> None:
        ack()
        flow.cancel(body, context["actor"])

    @app.action(ActionId.CONFIRM_REVOKE.value)
    @guarded
    def on_confirm(ack: Ack, body: dict, context, client) -> None:
        ack()
        flow.confirm(body, context["actor"], client)

    @app.action(ActionId.CONFIRM_REVOKE_OWNER.value)
    @guarded
    def on_confirm_owner(ack: Ack, body: dict, context, client) -> None:
        ack()
        flow.confirm_owner(body, context["actor"], client)

    @app.action(ActionId.REASON.value)
    @guarded
    def on_reason(ack: Ack) -> None:
        ack()  # the choice is read from the card's state when "Revoke Key" is clicked

    @app.action(re.compile(r"^apikeys\.(page\.(next|prev)|list|revoke_owner\.cancel)$"))
    @guarded
    def on_page(ack: Ack, body: dict) -> None:
        ack()
        response_url = body.get("response_url")
        try:
            view = decode_page(_first_action(body).get("value"))
        except BadValue:
            view = ListView()
        if isinstance(view, HistoryView):
            answer = render_history(store, view)
            reply.send(response_url, replace=True, text=answer.text, blocks=answer.blocks)
        else:
            flow._show_list(response_url, view)

    @app.action(re.compile(r".*"))
    @guarded
    def on_unknown_action(ack: Ack, body: dict) -> None:
        ack()  # an element from an older version of the app: acknowledge, change nothing
        reply.send(body.get("response_url"), replace=False, text=STALE_BUTTON, blocks=blocks.text_message(STALE_BUTTON))
