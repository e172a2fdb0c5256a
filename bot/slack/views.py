"""What a message shows, carried in button values so that no handler needs ``body["message"]``.

Values arrive from the client, so they are parsed defensively and only ever *select what to
show*; nothing here grants anything (authorisation is re-checked on the server).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.keys import KEY_ID_RE, OWNER_RE, STATUSES

MAX_VALUE = 2000  # Slack's limit for a button value


class BadValue(ValueError):
    """A button value that is not one we rendered (stale, truncated or forged)."""


@dataclass(frozen=True)
class ListView:
    """A page of the key list: which keys, and where the page starts."""

    status: str = "active"
    owner: str | None = None
    after: str | None = None   # cursor: the page after this key
    before: str | None = None  # cursor: the page before this key

    def first_page(self) -> "ListView":
        return ListView(self.status, self.owner)


@dataclass(frozen=True)
class HistoryView:
    """A page of audit history: entries older than ``before_id`` or newer than ``after_id``."""

    key_id: str | None = None
    before_id: int | None = None
    after_id: int | None = None


def _dump(data: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))
    if len(text) > MAX_VALUE:
        raise ValueError("button value too long")
    return text


def _load(value: Any) -> dict[str, Any]:
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise BadValue("not a value we rendered")
    try:
        data = json.loads(value)
    except ValueError:
        raise BadValue("not a value we rendered") from None
    if not isinstance(data, dict):
        raise BadValue("not a value we rendered")
    return data


def _list_view(data: Any) -> ListView:
    if not isinstance(data, dict):
        raise BadValue("bad list view")
    status = data.get("s", "active")
    owner = data.get("o")
    after, before = data.get("a"), data.get("b")
    if status not in STATUSES:
        raise BadValue("bad status")
    if owner is not None and (not isinstance(owner, str) or not OWNER_RE.match(owner)):
        raise BadValue("bad owner")
    for cursor in (after, before):
        if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 80):
            raise BadValue("bad cursor")
    return ListView(status=status, owner=owner, after=after, before=before)


def _list_data(view: ListView) -> dict[str, Any]:
    data = {"s": view.status if view.status != "active" else None, "o": view.owner, "a": view.after, "b": view.before}
    return {k: v for k, v in data.items() if v is not None}


def encode_list(view: ListView) -> str:
    return _dump({"v": "l", **_list_data(view)})


def encode_history(view: HistoryView) -> str:
    return _dump({"v": "h", "k": view.key_id, "i": view.before_id, "j": view.after_id})


def decode_page(value: Any) -> ListView | HistoryView:
    data = _load(value)
    if data.get("v") == "l":
        return _list_view(data)
    if data.get("v") == "h":
        key_id, before_id, after_id = data.get("k"), data.get("i"), data.get("j")
        if key_id is not None and (not isinstance(key_id, str) or not KEY_ID_RE.match(key_id)):
            raise BadValue("bad key id")
        for position in (before_id, after_id):
            if position is not None and (not isinstance(position, int) or isinstance(position, bool)
                                         or not 0 <= position < 2**31):
                raise BadValue("bad position")
        return HistoryView(key_id=key_id, before_id=before_id, after_id=after_id)
    raise BadValue("unknown view")


@dataclass(frozen=True)
class KeyAction:
    """A button about one key: which key, the list to return to, and (confirm) the reason/time."""

    key_id: str
    view: ListView
    reason: str | None = None
    issued_at: int | None = None  # unix seconds the confirmation was shown


def encode_key_action(action: KeyAction) -> str:
    return _dump({"k": action.key_id, "l": _list_data(action.view), "r": action.reason, "t": action.issued_at})


def decode_key_action(value: Any) -> KeyAction:
    data = _load(value)
    key_id = data.get("k")
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise BadValue("bad key id")
    reason = data.get("r")
    if reason is not None and not isinstance(reason, str):
        raise BadValue("bad reason")
    issued_at = data.get("t")
    if issued_at is not None and (not isinstance(issued_at, int) or isinstance(issued_at, bool)
                                  or not 0 <= issued_at < 2**53):
        raise BadValue("bad time")
    return KeyAction(key_id=key_id, view=_list_view(data.get("l", {})), reason=reason, issued_at=issued_at)



@dataclass(frozen=True)
class OwnerAction:
    """The bulk confirmation: whose keys, up to which key (the newest shown), how many, when shown."""

    owner: str
    up_to: str
    count: int
    issued_at: int


def encode_owner_action(action: OwnerAction) -> str:
    return _dump({"o": action.owner, "u": action.up_to, "n": action.count, "t": action.issued_at})


def decode_owner_action(value: Any) -> OwnerAction:
    data = _load(value)
    owner, up_to, count, issued_at = data.get("o"), data.get("u"), data.get("n"), data.get("t")
    if not isinstance(owner, str) or not OWNER_RE.match(owner):
        raise BadValue("bad owner")
    if not isinstance(up_to, str) or len(up_to) > 80:
        raise BadValue("bad cursor")
    for number in (count, issued_at):
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**53:
            raise BadValue("bad number")
    return OwnerAction(owner=owner, up_to=up_to, count=count, issued_at=issued_at)
