"""Checks of what people and Slack supply, before anything stores it: one rule for names, owners,
actors, reasons, notes, key ids and statuses, whichever interface the value came through.

Identifiers that hold an API key (a name, an owner) are refused; prose (an actor, a note) has the
key masked (``redaction.redact``), so that a revocation typed in a hurry still goes through.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidInput
from .models import RevokeReason
from .redaction import looks_like_key, redact

MAX_NAME = 80
MAX_NOTE = 500
MAX_ACTOR = 200
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,99}$")
KEY_ID_RE = re.compile(r"^key_[0-9A-Za-z]{17}$")
STATUSES = ("active", "revoked", "expired", "all")


def _no_control_chars(value: str, what: str) -> str:
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value


def _no_key(value: str, what: str) -> str:
    if looks_like_key(value):
        raise InvalidInput(f"{what} must not contain an API key (the key is not stored; "
                           "if it is a real one, treat it as leaked)")
    return value


def check_name(name: str, *, room: int = 0) -> str:
    cleaned = (name or "").strip()
    if not cleaned:
        raise InvalidInput("a key needs a name")
    if len(cleaned) > MAX_NAME - room:
        raise InvalidInput(f"a key name is at most {MAX_NAME - room} characters")
    return _no_key(_no_control_chars(cleaned, "a key name"), "a key name")


def check_owner(owner: str) -> str:
    cleaned = (owner or "").strip()
    _no_key(cleaned, "an owner")
    if not OWNER_RE.match(cleaned):
        raise InvalidInput(
            f"invalid owner {owner!r}: 1-100 characters, letters, digits and . _ @ + - (like payments-team or ana@example.com)"
        )
    return cleaned


def check_actor(actor: str) -> str:
    cleaned = redact((actor or "").strip())
    if not cleaned:
        raise InvalidInput("an actor (who is doing this) is required")
    if len(cleaned) > MAX_ACTOR:
        raise InvalidInput(f"an actor is at most {MAX_ACTOR} characters")
    return _no_control_chars(cleaned, "the actor")


def check_reason(reason: str | RevokeReason | None) -> RevokeReason | None:
    if reason is None or reason == "":
        return None
    try:
        return RevokeReason(reason)
    except ValueError:
        choices = ", ".join(r.value for r in RevokeReason)
        raise InvalidInput(f"invalid reason {reason!r}: choose one of {choices}") from None


def check_note(note: str | None) -> str | None:
    if note is None:
        return None
    cleaned = redact(note.strip())
    if len(cleaned) > MAX_NOTE:
        raise InvalidInput(f"a note is at most {MAX_NOTE} characters")
    return _no_control_chars(cleaned.replace("\n", " "), "a note") or None


def check_key_id(key_id: str) -> str:
    cleaned = (key_id or "").strip()
    if not KEY_ID_RE.match(cleaned):
        raise InvalidInput(f"{key_id!r} is not a key id (they look like key_3hX9bQ2mZ7pL4tV8w)")
    return cleaned


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise InvalidInput(f"invalid status {status!r}: choose one of {', '.join(STATUSES)}")
    return status
