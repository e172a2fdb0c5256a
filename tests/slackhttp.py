"""Signed Slack requests for tests: re-exported from ``bot.devslack``, the one stand-in for Slack
that the tests and the playground share."""

from bot.devslack import (  # noqa: F401
    EVENTS_PATH,
    FORM,
    JSON,
    SlackReply,
    SlackSender,
    button,
    find_buttons,
    walk_buttons,
)
