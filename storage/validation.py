"""Checks of what people and Slack supply, before anything stores it: one rule for names, owners,
actors, reasons, notes, key ids and statuses, whichever interface the value came through.

Identifiers that hold an API key (a name, an owner) are refused; prose (an actor, a note) has the
key masked (``redaction.redact``), so that a revocation typed in a hurry still goes through.
"""

from __future__ import annotations

import re

from .errors import InvalidInput
from .models import RevokeReason
from .redaction import looks_like_key, redact

MAX_NAME = 80
MAX_NOTE = 500
MAX_ACTOR = 200
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,99}$")
KEY_ID_RE = re.compile(r"^key_[0-9A-Za-z]{17}$")
STATUSES = ("active", "revoked", "expired", "all")


# What free text may not hold: control characters (Cc) and format characters (Cf: the invisible ones
# and the bidirectional overrides that make a log line read other than it is), as one regex character
# class (Unicode 14.0, Python 3.11's), so that the management API's JSON Schema patterns say exactly what
# these checks accept; ``tests/test_manage.py`` recomputes it from ``unicodedata``. Private-use and
# unassigned code points are harmless text and pass.
# The Basic Multilingual Plane's part is written \\uXXXX, which JSON Schema's (ECMA-262), Python's and
# pydantic's regex dialects read alike; the few astral format characters are checked here only.
FORBIDDEN_BMP = (
    "\\x00-\\x1f\\x7f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891\\u08e2\\u180e\\u200b-\\u200f"
    "\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ufeff\\ufff9-\\ufffb"
)
FORBIDDEN_CHARS = FORBIDDEN_BMP + (
    "\\U000110bd\\U000110cd\\U00013430-\\U00013438\\U0001bca0-\\U0001bca3\\U0001d173-\\U0001d17a\\U000e0001"
    "\\U000e0020-\\U000e007f"
)
_FORBIDDEN_RE = re.compile(f"[{FORBIDDEN_CHARS}]")


def _no_control_chars(value: str, what: str) -> str:
    if _FORBIDDEN_RE.search(value):
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
