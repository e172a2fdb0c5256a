"""Refused clicks and commands: every one recorded, the audit channel told at most once per user per
``SUMMARY_INTERVAL``.

A non-admin clicking ``Revoke`` thirty times gets thirty ``key.revoke_denied`` entries, but one
audit-channel post: the first refusal posts at once (``"posted": true``); the refusals within the
next five minutes are appended without a post (``"posted": false``); the first refusal after that
posts again and says how many came between (``"refused_since_last_post"``). The decision is made
inside the write transaction, after the log's head row is locked, so replicas cannot both post.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Text, func, select, type_coerce

from .audit import Action, AuditLog, EventInput, _stored_time
from .models import AuditEvent, AuditHead
from .redaction import _encodable, redact
from .timeutil import utcnow

SUMMARY_INTERVAL = timedelta(minutes=5)
REFUSALS = (Action.KEY_REVOKE_DENIED.value, Action.KEY_ROTATE_DENIED.value, Action.COMMAND_DENIED.value)
_POSTED = '%"posted":true%'  # details are canonical JSON (sorted keys, no spaces)


def record_refusal(audit: AuditLog, event: EventInput):
    """Append one refusal; post it to the audit channel only if this user's last posted refusal is
    older than SUMMARY_INTERVAL. Returns the entry."""
    actor = redact(_encodable(event.actor))  # the actor as the log stores it, so the window is found
    with audit.db.write() as session:
        session.execute(select(AuditHead.last_id).where(AuditHead.id == 1).with_for_update())  # one decider at a time
        now = utcnow()
        last = session.execute(
            select(AuditEvent.id, type_coerce(AuditEvent.at, Text))
            .where(AuditEvent.action.in_(REFUSALS), AuditEvent.actor == actor, AuditEvent.details.like(_POSTED))
            .order_by(AuditEvent.id.desc()).limit(1)).first()
        recent = last is not None and now - _stored_time(last[0], last[1]) < SUMMARY_INTERVAL
        details = dict(event.details or {})
        if recent:
            details["posted"] = False
        else:
            since = session.execute(
                select(func.count()).select_from(AuditEvent)
                .where(AuditEvent.action.in_(REFUSALS), AuditEvent.actor == actor,
                       AuditEvent.id > (last[0] if last else 0))).scalar() if last is not None else 0
            details["posted"] = True
            details["refused_since_last_post"] = since
        return audit.append(session, EventInput(actor=actor, action=event.action, key_id=event.key_id,
                                                details=details), at=now, notify=not recent)
