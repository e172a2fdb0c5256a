"""Time is handled as aware UTC datetimes everywhere."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DURATION_RE = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
MAX_DURATION = timedelta(days=3660)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None) -> str | None:
    """``2026-11-26T04:00:00Z`` (None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s`` or a combination such as ``1d12h``."""
    from .errors import InvalidInput

    cleaned = (text or "").strip().lower()
    if not cleaned or _DURATION_RE.sub("", cleaned):
        raise InvalidInput(
            f"invalid duration {text!r}: use a number and a unit, like 90d, 12h, 30m (units w d h m s)"
        )
    total = timedelta()
    for amount, unit in _DURATION_RE.findall(cleaned):
        if len(amount) > 7:
            raise InvalidInput(f"invalid duration {text!r}: too long")
        total += timedelta(**{_UNITS[unit]: int(amount)})
    if total <= timedelta(0):
        raise InvalidInput(f"invalid duration {text!r}: must be longer than zero")
    if total > MAX_DURATION:
        raise InvalidInput(f"invalid duration {text!r}: at most 3660d (about ten years)")
    return total
