"""Replying through ``response_url`` (the only way to edit an ephemeral message), with retries."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from ..logs import redact

log = logging.getLogger("apikeys.slack")


def retry_handlers():
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
    ]


def send(response_url: str | None, *, replace: bool, text: str, blocks: list[dict] | None = None) -> bool:
    """Replace the message the click came from (``replace=True``) or add a new ephemeral one."""
    if not response_url:
        log.warning("no response_url in the request; cannot answer the user")
        return False
    payload: dict[str, Any] = {"text": redact(text), "response_type": "ephemeral"}
    payload["replace_original"] = replace
    if blocks is not None:
        payload["blocks"] = blocks
    client = WebhookClient(response_url, timeout=5, retry_handlers=retry_handlers())
    try:
        response = client.send_dict(payload)
    except Exception as exc:  # network failure after retries
        log.error("reply failed: %s", type(exc).__name__)
        return False
    if response.status_code != 200:
        log.error("reply failed: HTTP %s", response.status_code)
        return False
    return True
