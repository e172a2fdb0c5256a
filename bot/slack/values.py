"""Button values: what a message shows, carried in its buttons so that no listener needs
``body["message"]`` (Slack omits it for ephemeral messages).

Values come back from the client, so they are parsed strictly (pydantic, strict mode: no
coercion, a ``true`` is not a number and ``"5"`` is not one either) and only ever *select what to
show*; nothing here grants anything (authorisation is checked on the server for every click).
The JSON is compact (one- or two-letter aliases) because Slack caps a value at 2,000 characters.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from storage.keys import KEY_ID_RE, OWNER_RE

MAX_VALUE = 2000  # Slack's limit for a button value

Status = Literal["active", "revoked", "expired", "all"]  # storage.keys.STATUSES
Owner = Annotated[str, StringConstraints(pattern=OWNER_RE.pattern)]
KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_RE.pattern)]
Cursor = Annotated[str, StringConstraints(max_length=80)]
Position = Annotated[int, Field(ge=0, lt=2**31)]   # an audit entry id
Number = Annotated[int, Field(ge=0, lt=2**53)]     # a count or unix seconds (exact in any JSON reader)


class BadValue(ValueError):
    """A button value that is not one we rendered (stale, truncated or forged)."""


class ButtonValue(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, populate_by_name=True, extra="ignore")
    kind: ClassVar[str | None] = None  # the "v" a page value starts with (list or history)


class ListView(ButtonValue):
    """A page of the key list: which keys, and where the page starts."""

    kind: ClassVar[str | None] = "l"
    status: Status = Field("active", alias="s")
    owner: Owner | None = Field(None, alias="o")
    after: Cursor | None = Field(None, alias="a")    # cursor: the page after this key
    before: Cursor | None = Field(None, alias="b")   # cursor: the page before this key

    def first_page(self) -> ListView:
        return ListView(status=self.status, owner=self.owner)


class HistoryView(ButtonValue):
    """A page of audit history: entries older than ``before_id`` or newer than ``after_id``."""

    kind: ClassVar[str | None] = "h"
    key_id: KeyId | None = Field(None, alias="k")
    before_id: Position | None = Field(None, alias="i")
    after_id: Position | None = Field(None, alias="j")


class KeyAction(ButtonValue):
    """A button about one key: which key, the list to return to, and (confirm) the reason/time."""

    key_id: KeyId = Field(alias="k")
    view: ListView = Field(default_factory=ListView, alias="l")
    reason: str | None = Field(None, alias="r")
    issued_at: Number | None = Field(None, alias="t")  # unix seconds the confirmation was shown


class OwnerAction(ButtonValue):
    """The bulk confirmation: whose keys, up to which key (the newest shown), how many, when shown."""

    owner: Owner = Field(alias="o")
    up_to: Cursor = Field(alias="u")
    count: Number = Field(alias="n")
    issued_at: Number = Field(alias="t")


def encode(value: ButtonValue) -> str:
    """The compact JSON a button carries; defaults are left out. Raises ValueError past Slack's limit."""
    data = value.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    if value.kind:
        data = {"v": value.kind, **data}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_VALUE:
        raise ValueError("button value too long")
    return text


Value = TypeVar("Value", bound=ButtonValue)
PAGES: dict[str, type[ListView] | type[HistoryView]] = {"l": ListView, "h": HistoryView}


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


def decode(model: type[Value], value: Any) -> Value:
    """Parse a button value as ``model`` (strictly), or raise BadValue."""
    return _validate(model, _load(value))


def decode_page(value: Any) -> ListView | HistoryView:
    """A pager's value: a list page or a history page, by its ``v``."""
    data = _load(value)
    model = PAGES.get(data.get("v")) if isinstance(data.get("v"), str) else None
    if model is None:
        raise BadValue("unknown view")
    return _validate(model, data)


def _validate(model: type[Value], data: dict[str, Any]) -> Value:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "value"
        raise BadValue(f"bad {where}") from None
