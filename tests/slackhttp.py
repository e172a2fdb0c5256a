"""Signed Slack requests for tests, and "clicking what the user sees".

``SlackSender`` is the playground's (``bot.playground.sender``) with ``click_button`` (find a
button by its visible text in the blocks the app sent and send its ``action_id``, ``value`` and
``block_id``) and ``body_of`` (the exact body a request would carry, not sent: for replays and
forgeries). It sends over HTTP to a URL, or through a transport:

* ``BoltTransport(app)``: in process, Bolt's own scenario-test style. The signed body and headers
  become a ``BoltRequest`` exactly as the production WSGI handler builds it
  (``bot.slack.app.bolt_request``) and go to ``app.dispatch``; the answer is the same
  ``SlackReply`` (status, headers, text, parsed body, elapsed) as over HTTP. Bolt acks and then
  runs the listener on its own thread pool, as in the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from bot.playground import sender
from bot.playground.sender import (  # noqa: F401 - re-exported for the tests
    EVENTS_PATH,
    FORM,
    JSON,
    HttpTransport,
    SlackReply,
)
from bot.slack.app import bolt_request

__all__ = ["EVENTS_PATH", "FORM", "JSON", "BoltTransport", "HttpTransport", "SlackReply", "SlackSender", "button",
           "find_buttons", "walk_buttons"]


class _Button(NamedTuple):
    block_id: str | None
    element: dict[str, Any]


def _blocks_of(blocks: Any) -> list[dict[str, Any]]:
    """Accept a block list, a JSON string of one, or a message/payload dict with ``blocks``."""
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if isinstance(blocks, Mapping):
        blocks = blocks.get("blocks") or []
    return list(blocks or [])


def walk_buttons(blocks: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Yield ``(block_id, button_element)`` for every button in ``actions`` elements and section
    accessories, in display order."""
    for block in _blocks_of(blocks):
        candidates: list[Any] = []
        if block.get("type") == "actions":
            candidates = list(block.get("elements") or [])
        elif block.get("type") == "section" and block.get("accessory"):
            candidates = [block["accessory"]]
        for element in candidates:
            if isinstance(element, Mapping) and element.get("type") == "button":
                yield block.get("block_id"), dict(element)


def _button_text(element: Mapping[str, Any]) -> str:
    text = element.get("text")
    return text.get("text", "") if isinstance(text, Mapping) else str(text or "")


def find_buttons(blocks: Any, text: str | None = None) -> list[dict[str, Any]]:
    """All button elements in ``blocks`` (or only those whose visible text is exactly ``text``)."""
    return [element for _, element in walk_buttons(blocks)
            if text is None or _button_text(element) == text]


def _find_one(blocks: Any, text: str) -> _Button:
    found = [_Button(block_id, element) for block_id, element in walk_buttons(blocks)
             if _button_text(element) == text]
    if len(found) != 1:
        seen = [_button_text(e) for _, e in walk_buttons(blocks)]
        problem = "no button" if not found else f"{len(found)} buttons"
        raise AssertionError(f"{problem} with text {text!r}; buttons shown: {seen}")
    return found[0]


def button(blocks: Any, text: str) -> dict[str, Any]:
    """The one button element whose visible text is exactly ``text``.

    Raises AssertionError (listing the visible buttons) when there is none or more than one.
    """
    return _find_one(blocks, text).element


class BoltTransport:
    """Hand each request to the Bolt ``app`` in this process, as the production WSGI handler does
    (``bot.slack.app.bolt_request``, then ``app.dispatch``). Only ``/slack/events`` exists."""

    def __init__(self, app: Any):
        self.app = app

    def __call__(self, body: bytes, headers: dict[str, str], path: str = EVENTS_PATH) -> tuple[int, dict[str, str], str]:
        if path != EVENTS_PATH:
            return 404, {"content-type": "application/json"}, json.dumps({"error": f"no route {path}"})
        # As a WSGI server hands them to Bolt: lower-case names, the body's length among them.
        received = {name.lower(): value for name, value in headers.items()}
        received["content-length"] = str(len(body))
        response = self.app.dispatch(bolt_request(body, None, received))
        return response.status, response.first_headers(), response.body


class SlackSender(sender.SlackSender):
    """The playground's sender (``bot.playground.sender.SlackSender``) with the tests' helpers."""

    def click_button(self, blocks: Any, text: str, **kwargs: Any) -> SlackReply:
        """Click the button whose visible text is exactly ``text`` in ``blocks``.

        ``blocks`` may be a block list or a message/response payload with ``blocks``. Sends the
        button's ``action_id``, ``value`` and its block's ``block_id`` (or ``kwargs["block_id"]``
        when the block has none); other keyword arguments go to ``click``. For a non-ephemeral
        click the message carries ``blocks``.
        """
        found = _find_one(blocks, text)
        if found.block_id is not None:
            kwargs["block_id"] = found.block_id
        if not kwargs.get("ephemeral", True):
            kwargs.setdefault("message_blocks", _blocks_of(blocks))
        return self.click(found.element.get("action_id", ""), found.element.get("value"),
                          text=_button_text(found.element), **kwargs)

    def body_of(self, request: str, *args: Any, **kwargs: Any) -> bytes:
        """The exact body ``getattr(self, request)(*args, **kwargs)`` would send (signed as usual,
        but not sent): ``sender.body_of("click_button", card, "Revoke Key", response_url=thread)``."""
        captured: list[bytes] = []

        def capture(body: bytes, headers: dict[str, str], path: str = EVENTS_PATH) -> tuple[int, dict[str, str], str]:
            captured.append(body)
            return 0, {}, ""

        twin = SlackSender(capture, self.signing_secret, self.stub, api_app_id=self.api_app_id,
                           verification_token=self.verification_token)
        getattr(twin, request)(*args, **kwargs)
        return captured[0]
