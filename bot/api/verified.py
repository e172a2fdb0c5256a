"""The line and the count per verification, on the cheap path (shared by ``keys`` and ``auth``)."""

from __future__ import annotations

from .. import metrics
from ..logs import RequestLog

request_log = RequestLog("apikeys.http")


def verified(event: str, result) -> None:
    """``event=auth code=VALID key_id=key_…``: codes and key ids are ours, never quoted or masked."""
    key_id = result.key_id
    metrics.verified(event, result.code)
    request_log.info(f"event={event} code={result.code.value} key_id={key_id}" if key_id
                     else f"event={event} code={result.code.value}")
