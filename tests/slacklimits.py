"""Slack's limits, checked the same way in every Slack test.

The one checker is ``bot.playground.limits.slack_limit_problems`` (the playground's stand-in uses it too):
``SlackStub`` runs it over every message it receives and over every slash-command ack that
``SlackSender`` receives, refuses blocks that break a limit with ``invalid_blocks`` like Slack, and
keeps every problem. Fixtures that start a stub call ``assert_stub_within_limits`` at teardown;
tests of the pure Block Kit renderers call ``assert_within_limits`` on what they render.
"""

from __future__ import annotations

from typing import Any

from bot.playground.limits import slack_limit_problems
from bot.playground.slackstub import SlackStub

__all__ = ["assert_stub_within_limits", "assert_within_limits", "slack_limit_problems"]


def assert_within_limits(payload: Any, what: str = "the payload") -> Any:
    """``payload`` (a message dict or a list of blocks) unchanged, or AssertionError naming each problem."""
    problems = slack_limit_problems(payload)
    assert not problems, f"{what} breaks Slack's limits:\n  " + "\n  ".join(problems)
    return payload


def assert_stub_within_limits(stub: SlackStub) -> None:
    """No message the stub received, and no ack the sender received, broke one of Slack's limits."""
    problems = stub.take_limit_problems()
    assert not problems, "messages sent to Slack broke its limits:\n  " + "\n  ".join(problems)
