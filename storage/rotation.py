"""Rotation: a replacement key now, the old key ended after a grace period, in one transaction.

``rotate`` creates the replacement (same name, owner and lifetime; a new id and secret), and marks
the old key rotated: with a grace period its ``expires_at`` becomes the end of the grace (never
later than it already was), so the old key stops working then with no process needed; with no grace
(``now``) it is revoked at once, reason ``rotation``, through the one revocation UPDATE. The entries
are one action: ``key.rotated`` (both ids, the grace, when the old key ends), the replacement's
``key.created`` and, for ``now``, the old key's ``key.revoked``: one audit-channel post, one post to
the owner's channel, and the old key's cards updated, all queued in the same commit.

A key is rotated once: a second rotation of the same key is refused (rotate its replacement), and of
two racing rotations one wins (a conditional UPDATE on ``rotated_to IS NULL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update

from .audit import Action, AuditEvent, EventInput
from .errors import InvalidInput, KeyNotFound, KeyStateConflict
from .models import ApiKey, KeyStatus, RevokeReason
from .newkeys import CreatedKey, _require_key_id_shape, new_key_id, new_key_row
from .revocation import Revocation, Via, active_at, revoke_rows
from .timeutil import iso, utcnow
from .validation import check_note

if TYPE_CHECKING:
    from .keys import KeyService

MAX_GRACE = timedelta(days=30)
# The grace periods Slack offers (the CLI takes any duration up to MAX_GRACE, or "now").
GRACES: dict[str, timedelta] = {"now": timedelta(0), "1 hour": timedelta(hours=1), "24 hours": timedelta(hours=24),
                                "7 days": timedelta(days=7)}
DEFAULT_GRACE = "24 hours"


def grace_label(grace: timedelta) -> str:
    for label, value in GRACES.items():
        if value == grace:
            return label
    seconds = int(grace.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def parse_grace(text: str) -> timedelta:
    """``now`` (or 0), a Slack choice (``24 hours``) or a duration (``90m``, ``2d``), at most ``MAX_GRACE``:
    the command line's ``--grace`` and the management API's ``grace`` alike."""
    from .timeutil import parse_duration

    cleaned = (text or "").strip().lower()
    if cleaned in ("now", "0", "0s"):
        return GRACES["now"]
    if cleaned in GRACES:
        return GRACES[cleaned]
    grace = parse_duration(text)
    if grace > MAX_GRACE:
        raise InvalidInput(f"a grace period is at most {MAX_GRACE.days} days, got {text!r}")
    return grace


def check_grace(grace: object) -> timedelta:
    if not isinstance(grace, timedelta) or grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidInput(f"a grace period is from now (0) to {MAX_GRACE.days} days")
    return grace


@dataclass(frozen=True)
class Rotated:
    old: ApiKey          # as it is now: rotated (ending at expires_at), or revoked for a grace of now
    new: CreatedKey      # the replacement and its secret (shown once)
    grace: timedelta
    event: AuditEvent    # the key.rotated entry
    sealed: Any = None   # what ``seal`` returned (a one-time link), if given


def rotate(keys: KeyService, key_id: str, *, actor: str, via: Via | str, grace: timedelta, note: str | None = None,
           context: dict[str, Any] | None = None, seal=None) -> Rotated:
    """``seal(session, new_key_id, secret, now)``, when given, runs in the same transaction (a one-time link)."""
    grace = check_grace(grace)
    revocation = Revocation.of(actor=actor, via=via, reason=RevokeReason.ROTATION, note=note, context=context)
    note = check_note(note)
    _require_key_id_shape(key_id)
    with keys.db.write() as session:
        now = utcnow()
        query = select(ApiKey).where(ApiKey.id == key_id)
        if keys.db.dialect == "postgresql":
            query = query.with_for_update()
        old = session.scalars(query).first()
        if old is None:
            raise KeyNotFound(key_id)
        status = old.status_at(now)
        if status is not KeyStatus.ACTIVE:
            raise KeyStateConflict(f"{key_id} is {status.value}; only an active key can be rotated")
        if old.rotated_to is not None:
            raise KeyStateConflict(f"{key_id} was already rotated (its replacement is {old.rotated_to}); "
                               "rotate the replacement instead")
        lifetime = old.expires_at - old.created_at if old.expires_at is not None else None
        new_id = new_key_id()
        row, secret, created = new_key_row(new_id, old.name, old.owner, revocation.actor, now,
                                           now + lifetime if lifetime is not None else None, rotated_from=old.id)
        keys._insert(session).execute(session, [row])
        marks = {"rotated_to": new_id, "rotated_at": now, "rotated_by": revocation.actor}
        where = and_(ApiKey.id == old.id, ApiKey.rotated_to.is_(None), active_at(now))
        if grace == timedelta(0):
            won = revoke_rows(session, where, {**revocation.values(now), **marks})
            ends_at = now
        else:
            ends_at = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
            won = list(session.scalars(update(ApiKey).where(where, ApiKey.revoked_at.is_(None))
                                       .values(**marks, expires_at=ends_at).returning(ApiKey.id)))
        if not won:  # another rotation or revocation got there first: roll back the replacement too
            raise KeyStateConflict(f"{key_id} was rotated or revoked meanwhile; nothing changed")
        old = session.get(ApiKey, old.id, populate_existing=True)
        new = CreatedKey(row, secret)
        rotated = EventInput(actor=revocation.actor, action=Action.KEY_ROTATED, key_id=old.id, details={
            "name": old.name, "owner": old.owner, "key": old.masked, "new_key_id": new_id, "new_key": new.key.masked,
            "grace": grace_label(grace), "grace_seconds": int(grace.total_seconds()), "ends_at": iso(ends_at),
            "note": note, **revocation.context, "via": revocation.via.value})
        entries = [rotated, created]
        if grace == timedelta(0):
            entries.append(revocation.entry(old, rotated_to=new_id))
        appended = keys.audit.append_many(session, entries, at=now)
        sealed = seal(session, new_id, secret, now) if seal is not None else None
        return Rotated(old=old, new=new, grace=grace, event=appended[0], sealed=sealed)
