"""Revocation, written once: who revokes, why and through which interface (``Revocation``), the
one conditional UPDATE every revocation runs (``revoke_rows``) and the ``key.revoked`` entry it
records (``Revocation.entry``).

Slack's ``Revoke Key`` and ``Revoke N Keys``, the CLI, GitHub's and the CLI's leak reports all
revoke through here (``KeyService.revoke``, ``revoke_owner``, ``revoke_active_in``), so a rule
about revoking (what is checked, what the entry says, that a key is revoked once whoever races)
is kept in one place. The database backs it: a revocation can never be undone (``db.py``'s
triggers).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, update

from .audit import Action, EventInput
from .models import ApiKey, RevokeReason
from .validation import check_actor, check_note, check_reason


class Via(enum.StrEnum):
    """Which interface did it: recorded as the entry's ``via`` (the metrics count revocations by it)."""

    SLACK = "slack"
    CLI = "cli"
    GITHUB = "github-secret-scanning"  # GitHub's secret scanning reports (the value history already holds)
    API = "api"                        # the management API
    VERIFY = "verify"                  # POST /v1/keys/verify (a revoked key presented there)
    AUTH = "auth"                      # /v1/auth


@dataclass(frozen=True)
class Revocation:
    """A revocation request, checked once (``of``); the same for every key it revokes."""

    actor: str
    via: Via
    reason: RevokeReason | None = None
    note: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # where it happened (a channel, a URL found in)

    @classmethod
    def of(cls, *, actor: str, via: Via | str, reason: str | RevokeReason | None = None, note: str | None = None,
           context: dict[str, Any] | None = None) -> Revocation:
        """Validated: the actor and note masked and bounded, the reason one of ``RevokeReason``."""
        return cls(actor=check_actor(actor), via=Via(via), reason=check_reason(reason), note=check_note(note),
                   context=dict(context or {}))

    def values(self, now: datetime) -> dict[str, Any]:
        """The columns a revocation sets."""
        return {"revoked_at": now, "revoked_by": self.actor,
                "revoke_reason": self.reason.value if self.reason else None, "revoke_note": self.note}

    def entry(self, key: ApiKey, **extra: Any) -> EventInput:
        """The ``key.revoked`` entry of ``key``'s revocation (``extra``: what this path adds, like ``bulk``)."""
        return EventInput(actor=self.actor, action=Action.KEY_REVOKED, key_id=key.id, details={
            "name": key.name, "owner": key.owner, "key": key.masked,
            "reason": self.reason.value if self.reason else None, "note": self.note,
            **self.context, **extra, "via": self.via.value})


def active_at(now: datetime):
    """Not revoked, and not expired at ``now``."""
    return and_(ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


def revoke_rows(session, where, values: dict[str, Any]) -> list[str]:
    """The one UPDATE that revokes: the keys matching ``where`` that are not revoked yet get
    ``values``; returns their ids. Conditional on ``revoked_at IS NULL``, so of two racing callers
    one revokes and the other gets nothing back (one ``key.revoked`` entry per key)."""
    return list(session.scalars(
        update(ApiKey).where(where, ApiKey.revoked_at.is_(None)).values(**values).returning(ApiKey.id)))
