"""The playground's Slack stand-in, plus what only tests need.

``SlackStub`` here is ``bot.playground.slackstub.SlackStub`` with: waiting for a call
(``wait_for``, ``wait_for_api``, ``wait_for_response``, ``mark``), inspection (``api_calls``,
``responses_to``, ``current_message``, ``limit_problems`` …), injected failures (``fail_next``:
5xx, 429 with ``Retry-After``, Slack errors, redirects, delays), custom Web API methods
(``add_method``) and ``clear``. The playground and the app never call any of these.

Example::

    with SlackStub() as stub:
        client = WebClient(token=stub.bot_token, base_url=stub.api_url)
        client.chat_postMessage(channel="C0INCIDENT", text="hi")
        call = stub.wait_for_api("chat.postMessage")
        assert call.body["text"] == "hi"

        stub.fail_next("chat.postMessage", status=429, retry_after=1)
        stub.fail_next("chat.postMessage", error="channel_not_found", times=2)

Nothing here sleeps to wait for an effect: ``wait_for*`` block on a condition, woken by each new
call. To show that something did *not* happen, wait for a later positive signal first, or wait a
short bounded time expecting nothing (``assert_nothing_more``).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.playground import slackstub
from bot.playground.slackstub import (  # noqa: F401 - re-exported for the tests
    ADMIN_USER,
    APP_ID,
    BOT_ID,
    MEMBER_USER,
    OTHER_TEAM,
    OTHER_WORKSPACE_USER,
    OWN_TEAM,
    RESPONSE,
    Call,
    Injected,
    Reply,
)

__all__ = ["ADMIN_USER", "APP_ID", "BOT_ID", "MEMBER_USER", "OTHER_TEAM", "OTHER_WORKSPACE_USER", "OWN_TEAM",
           "RESPONSE", "Call", "SlackStub", "assert_nothing_more", "summary"]


def summary(call: Call) -> str:
    """A one-line description of ``call`` for assertion messages."""
    body = json.dumps(call.body, ensure_ascii=False, default=str)
    if len(body) > 160:
        body = body[:157] + "..."
    outcome = f"{call.status}"
    if isinstance(call.response, dict) and "error" in call.response:
        outcome += f" error={call.response['error']}"
    if call.failed:
        outcome += " (injected failure)"
    if call.delay:
        outcome += f" (delayed {call.delay:g}s)"
    target = call.method_name if call.kind == "api" else call.path
    return f"{call.kind} {call.http_method} {target} -> {outcome} body={body}"


@dataclass
class _Failure:
    status: int | None
    error: str | None
    retry_after: int | None
    delay: float
    location: str | None = None

    @property
    def replaces_answer(self) -> bool:
        return self.status is not None or self.error is not None

    def reply(self) -> Reply:
        if self.location is not None:
            return Reply(self.status or 302, "Found", {"Location": self.location})
        if self.status == 429:
            headers = {"Retry-After": str(self.retry_after if self.retry_after is not None else 1)}
            return Reply(429, {"ok": False, "error": self.error or "ratelimited"}, headers)
        if self.status is not None and self.status != 200:
            if self.error is None:
                return Reply(self.status, _STATUS_TEXT.get(self.status, "Error"))
            return Reply(self.status, {"ok": False, "error": self.error})
        return Reply(200, {"ok": False, "error": self.error or "fatal_error"})


_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout", 404: "Not Found", 400: "Bad Request"}


class SlackStub(slackstub.SlackStub):
    """The stand-in (see ``bot.playground.slackstub.SlackStub``) with the tests' helpers."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._failures: dict[str, deque[_Failure]] = {}
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    # ------------------------------------------------------------------ the stand-in's hooks

    def _injected(self, method_name: str) -> Injected:
        failures = self._failures.get(method_name)
        failure = failures.popleft() if failures else None
        if failure is None:
            return super()._injected(method_name)
        return Injected(failure.reply() if failure.replaces_answer else None, failure.delay)

    def _method(self, method: str) -> Callable[[dict[str, Any]], Reply] | None:
        custom = self._methods.get(method)
        if custom is not None:
            return lambda body: Reply(200, custom(body))
        return super()._method(method)

    # ------------------------------------------------------------------ configuration

    def fail_next(self, method_name: str, *, status: int | None = None, error: str | None = None,
                  retry_after: int | None = None, delay: float | None = None, times: int = 1,
                  location: str | None = None) -> None:
        """Make the next ``times`` requests to ``method_name`` fail; queued failures apply in order.

        ``method_name`` is a Web API method or ``"response"`` (any ``response_url``).

        * ``status=500`` (the default when nothing else is given): plain-text HTTP error.
        * ``status=429, retry_after=1``: ``Retry-After: 1`` and ``{"ok": false, "error": "ratelimited"}``.
        * ``error="channel_not_found"``: HTTP 200 with ``{"ok": false, "error": ...}`` (with
          ``status`` too: that status with the JSON error).
        * ``delay=2.0``: sleep before answering (to make clients time out). Alone, the request is
          then handled normally (a message is still posted, as on Slack); combined with ``status``
          or ``error``, the failure is answered after the delay.
        * ``location="http://..."``: a redirect there (``status`` 302 unless given), as a hostile or
          misconfigured server might answer; a client that follows it shows up at that URL.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if location is not None and status is None:
            status = 302
        if status is None and error is None and not delay:
            status = 500
        if retry_after is not None and status is None:
            status = 429
        failure = _Failure(status, error, retry_after, float(delay or 0), location)
        with self.lock:
            self._failures.setdefault(method_name, deque()).extend(failure for _ in range(times))

    def add_method(self, method_name: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Answer ``method_name`` with ``handler(body)`` (a dict sent as JSON with HTTP 200).

        Token checking and failure injection still apply. Overrides built-in methods too.
        """
        with self.lock:
            self._methods[method_name] = handler

    def clear(self) -> None:
        """Forget recorded calls, response payloads, channel messages and pending failures.

        Issued response URLs stay valid. Limit problems are kept (see ``take_limit_problems``).
        """
        with self.lock:
            self._calls.clear()
            for payloads in self._responses.values():
                payloads.clear()
            self._failures.clear()
            self.messages.clear()

    # ------------------------------------------------------------------ inspection

    @property
    def limit_problems(self) -> list[str]:
        """A snapshot of every way a message sent to the stub (or checked with ``check_limits``) broke
        Slack's limits, oldest first: ``"<method or response path>: <problem>"``."""
        with self.lock:
            return list(self._limit_problems)

    def take_limit_problems(self) -> list[str]:
        """``limit_problems``, forgotten afterwards (a test that breaks a limit on purpose takes them)."""
        with self.lock:
            problems, self._limit_problems = self._limit_problems, []
            return problems

    def mark(self) -> int:
        """The number of calls recorded so far; pass it as ``since=`` to only see later calls."""
        with self.lock:
            return len(self._calls)

    def api_calls(self, method_name: str | None = None) -> list[Call]:
        """Recorded Web API calls (all, or to ``method_name``), including injected failures."""
        with self.lock:
            return [c for c in self._calls
                    if c.kind == "api" and (method_name is None or c.method_name == method_name)]

    @property
    def responses(self) -> dict[str, list[dict[str, Any]]]:
        """A snapshot: response URL -> payloads it received (successful POSTs only), oldest first."""
        with self.lock:
            return {url: list(payloads) for url, payloads in self._responses.items()}

    def responses_to(self, url: str) -> list[dict[str, Any]]:
        """Payloads successfully POSTed to ``url`` so far, oldest first."""
        with self.lock:
            return list(self._responses.get(url, ()))

    def last_response(self, url: str) -> dict[str, Any] | None:
        """The latest payload POSTed to ``url``, or None."""
        payloads = self.responses_to(url)
        return payloads[-1] if payloads else None

    def current_message(self, url: str) -> dict[str, Any] | None:
        """What the user sees now in the message thread of ``url`` (e.g. an ephemeral message).

        The thread's content is its latest payload; ``delete_original`` removes it (None). This
        treats every POST as replacing the thread's message: good enough to ask "what does the
        user see after this click", not a model of Slack's new-message-vs-replace rules.
        """
        current: dict[str, Any] | None = None
        for payload in self.responses_to(url):
            current = None if payload.get("delete_original") else payload
        return current

    # ------------------------------------------------------------------ waiting

    def wait_for(self, predicate: Callable[[Call], bool], timeout: float = 5.0, *,
                 since: int = 0, description: str | None = None) -> Call:
        """Return the first recorded call (from index ``since``) matching ``predicate``.

        Waits up to ``timeout`` seconds for it to arrive, woken by each new call. A predicate that
        raises (e.g. ``KeyError`` on a call without that field) counts as "no match". Raises
        AssertionError listing the most recent calls when nothing matches in time.
        """
        found: list[Call] = []

        def matched() -> bool:
            for call in self._calls[since:]:
                try:
                    if predicate(call):
                        found.append(call)
                        return True
                except Exception:  # noqa: BLE001 - a non-matching shape is simply no match
                    continue
            return False

        with self._changed:
            # Condition.wait_for uses threading's clock, which freezegun leaves alone.
            if self._changed.wait_for(matched, timeout=timeout):
                return found[0]
            recent = self._calls[-10:]
            total = len(self._calls)
        what = description or getattr(predicate, "__name__", "predicate")
        lines = [f"no matching Slack call within {timeout:g}s (waiting for {what});"
                 f" {total} call(s) recorded" + (", most recent:" if recent else ".")]
        lines += [f"  {summary(call)}" for call in recent]
        raise AssertionError("\n".join(lines))

    def wait_for_api(self, method_name: str, predicate: Callable[[Call], bool] | None = None,
                     timeout: float = 5.0, *, since: int = 0) -> Call:
        """Wait for a successful (``ok``) call of Web API ``method_name`` matching ``predicate``."""
        return self.wait_for(
            lambda c: c.kind == "api" and c.method_name == method_name and c.ok
            and (predicate is None or predicate(c)),
            timeout, since=since, description=f"a successful {method_name} call")

    def wait_for_response(self, url: str, timeout: float = 5.0, *, since: int = 0) -> dict[str, Any]:
        """Wait for a successful POST to response URL ``url``; return its payload."""
        call = self.wait_for(lambda c: c.kind == "response" and c.url == url and c.ok, timeout,
                             since=since, description=f"a POST to {url}")
        return call.body


def assert_nothing_more(stub: SlackStub, predicate: Callable[[Call], bool], *, since: int,
                        what: str, timeout: float = 1.0) -> None:
    """No call matching ``predicate`` after index ``since`` within a short, bounded time."""
    try:
        extra = stub.wait_for(predicate, timeout, since=since)
    except AssertionError:
        return
    raise AssertionError(f"unexpected {what}: {summary(extra)}")
