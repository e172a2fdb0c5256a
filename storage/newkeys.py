"""A new key: its id, its row and secret, and its ``key.created`` entry (for ``KeyService.create`` and
rotation alike)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from . import keyformat
from .audit import Action, EventInput
from .errors import KeyNotFound
from .models import ApiKey
from .timeutil import iso
from .validation import KEY_ID_RE


class CreatedKey:
    """A new key and its secret (shown once). ``key`` is built when first asked for: a bulk create
    of 50,000 keys that only prints them never builds the models."""

    __slots__ = ("_row", "_key", "secret")

    def __init__(self, row: tuple, secret: str):
        self._row = row  # _NEW_KEY_FIELDS
        self._key: ApiKey | None = None
        self.secret = secret

    @property
    def key(self) -> ApiKey:
        if self._key is None:
            self._key = _new_key(self._row)
        return self._key

    def shown(self) -> dict[str, Any]:
        """What ``apikeys create --json`` prints: the secret with the key's public fields."""
        key_id, name, owner, prefix, last4, _, created_at, _, expires_at = self._row
        return {"id": key_id, "key": self.secret, "name": name, "owner": owner, "prefix": prefix,
                "masked": keyformat.mask(prefix, last4), "created_at": iso(created_at), "expires_at": iso(expires_at)}

    def __repr__(self) -> str:
        return f"CreatedKey(id={self._row[0]!r})"




def _require_key_id_shape(key_id: object) -> None:
    """An id that cannot exist is simply not found (no database query)."""
    if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
        raise KeyNotFound(str(key_id)[:40])


def new_key_id() -> str:
    return "key_" + keyformat.b62encode(int.from_bytes(os.urandom(12), "big"), 17)




_NEW_KEY_FIELDS = ("id", "name", "owner", "prefix", "last4", "digest", "created_at", "created_by", "expires_at")


def new_key_row(key_id: str, name: str, owner: str, actor: str, now: datetime, expires_at: datetime | None,
                **details: Any) -> tuple[tuple, str, EventInput]:
    """A new key's row (``_NEW_KEY_FIELDS``), its secret and its ``key.created`` entry (``details``: what
    the path adds, like ``rotated_from``). Inputs already checked."""
    secret = keyformat.generate_secret()
    prefix, last4 = keyformat.KEY_PREFIX, secret[-4:]
    row = (key_id, name, owner, prefix, last4, keyformat.digest(secret), now, actor, expires_at)
    event = EventInput(actor=actor, action=Action.KEY_CREATED, key_id=key_id, details={
        "name": name, "owner": owner, "key": keyformat.mask(prefix, last4), "expires_at": iso(expires_at), **details})
    return row, secret, event


def _new_key(row: tuple) -> ApiKey:
    """The ApiKey of a row just validated and written: model_construct skips re-validation (8x faster)."""
    return ApiKey.model_construct(**dict(zip(_NEW_KEY_FIELDS, row, strict=True)), last_used_at=None, revoked_at=None,
                                  revoked_by=None, revoke_reason=None, revoke_note=None,
                                  rotated_to=None, rotated_at=None, rotated_by=None)
