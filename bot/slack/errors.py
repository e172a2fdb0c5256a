"""One error boundary for every Slack listener (Dispatch-style): domain errors become a clear
ephemeral message, anything else a generic one plus a log line; the user is answered once and
Slack is always acknowledged in time."""

from __future__ import annotations

import functools
import logging

from storage import DatabaseUnavailable, StorageError

from ..logs import fields
from . import blocks, reply

log = logging.getLogger("apikeys.slack")

UNAVAILABLE = ("The key store is unavailable right now; nothing was changed. Try again in a moment, "
               "or revoke from a server with `apikeys revoke KEY_ID --actor YOU`.")
UNEXPECTED = "Something went wrong and nothing was changed. The error is in the server log."


def message_for(error: BaseException) -> str:
    if isinstance(error, DatabaseUnavailable):
        return UNAVAILABLE
    if isinstance(error, StorageError):
        return f"{error}. Nothing was changed."
    log.error(fields(event="slack_error", error=type(error).__name__), exc_info=error)
    return UNEXPECTED


def report(error: BaseException, body: object, ack=None, replier: reply.Replier = reply.SLACK_ONLY) -> None:
    """Tell the user what went wrong: in the ack when it is still unanswered, else through response_url."""
    message = message_for(error)
    payload = blocks.text_message(f":warning: {message}")
    if ack is not None and getattr(ack, "response", None) is None:
        ack(response_type="ephemeral", text=message, blocks=payload)
        return
    response_url = body.get("response_url") if isinstance(body, dict) else None
    replier.send(response_url if isinstance(response_url, str) else None, replace=False, text=message, blocks=payload)


def guarded(listener):
    """Wrap a Bolt listener so that it never raises: Bolt would otherwise withdraw the ack, wait out
    its 3-second timer and hand the request to another listener."""

    @functools.wraps(listener)
    def wrapper(**kwargs):
        try:
            return listener(**kwargs)
        except Exception as error:  # the boundary: every failure is answered here
            context = kwargs.get("context")
            replier = context.get("reply") if context is not None else None
            report(error, kwargs.get("body"), kwargs.get("ack"), replier or reply.SLACK_ONLY)
            return None

    return wrapper
