"""The gate in front of Bolt on ``POST /slack/events``.

Only correctly signed requests (Slack's v0 signature, timestamp within 5 minutes) reach Bolt;
anything else gets 401 and changes nothing. A body the server cannot read (a malformed chunked
encoding, one that ends early) gets 400 and one over 1 MB 413, before that: there is nothing to
check a signature against. A signed request whose body does not have the shape Slack sends gets
400, so that no hostile or broken input can make Bolt fail with a 500.

The body is parsed as Bolt parses it (its own ``parse_body``, on the same content type: JSON, a
``payload=`` form whose last ``payload`` counts, or a flat form), and Bolt is handed exactly the
bytes and headers that were checked. What is checked is what Bolt reads, and how
(slack_bolt 1.x; the file that reads it in brackets):

* ``user``, ``team``, ``channel``, ``enterprise``: null or an object (or, in a form, an id),
  and null, an id or an object in every object Bolt looks into for ids: ``event``, ``message``,
  ``previous_message``, ``item``, ``assistant_thread`` and each of ``authorizations``, a list of
  objects; ``response_urls`` is a list of objects, and of one only: Bolt fails on several
  (request/internals.py, the context).
* ``event``, when present, is an object (the ignoring-self-events middleware); a message event's
  ``channel`` is a string and its ``assistant_thread`` an object (the assistant middleware on the
  message listener); a ``function_executed`` event's ``function`` is an object.
* ``view``, when present, is an object (logger/messages.py: an unhandled request is described in
  a log line); a ``view_submission``'s view has a ``type``, and a workflow step's comes with
  ``workflow_step``, as does a ``workflow_step_edit`` (request/payload_utils.py, ``to_step``).
* ``actions`` is a list of objects: for ``block_actions`` not empty and each with a string
  ``action_id``, for ``interactive_message`` not empty (``to_action`` reads the first; the
  listener matchers match its ``action_id`` with a pattern).
* ``callback_id`` (the view's too) and a ``block_suggestion``'s ``action_id`` are strings (the
  matchers with a pattern, logger/messages.py).
* a slash command's fields are strings (Slack sends a form; our listener reads ``text``).

Bolt catches what its middleware and listeners raise and answers 500 itself. Should a body get
past these checks and still make Bolt fail reading it, that 500 becomes a 400 as well, but only
when no listener ran (so nothing changed) and the error is one of reading a value of the wrong
shape; any other 5xx (Slack unreachable, a listener's own failure) stays what it is. Bolt's
internal lazy-listener headers are never taken from a request.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt.request.internals import parse_body
from slack_sdk.signature import SignatureVerifier

from ..logs import fields
from ..wsgi import STATUS_TEXT, HttpError, read_body

log = logging.getLogger("apikeys.slack")

MAX_BODY = 1024 * 1024
ID_FIELDS = ("user", "team", "channel", "enterprise")  # Bolt takes an id from each: the value, or its "id"
LOOKED_INTO = ("event", "message", "previous_message", "item", "assistant_thread")  # ...and from these, in turn
MAX_NESTING = 8  # objects within objects that Bolt looks into; Slack nests two or three
SLASH_COMMAND_FIELDS = ("command", "text", "token", "team_id", "team_domain", "enterprise_id", "enterprise_name",
                        "channel_id", "channel_name", "user_id", "user_name", "api_app_id", "is_enterprise_install",
                        "response_url", "trigger_id")
# Headers Bolt reads that are not a client's to send: its lazy listeners' re-invocation, and the
# body's type and length as a second, HTTP_-prefixed header (a server that keeps "Content_Type").
NOT_FOR_BOLT = ("HTTP_X_SLACK_BOLT_LAZY_ONLY", "HTTP_X_SLACK_BOLT_LAZY_FUNCTION_NAME", "HTTP_CONTENT_TYPE",
                "HTTP_CONTENT_LENGTH")
# What reading a value of the wrong shape raises (a missing key, a string where an object was expected ...).
READING_ERRORS = (LookupError, TypeError, AttributeError, ValueError, ArithmeticError, RecursionError)


def _json_response(start_response, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def parse_slack_body(text: str, media_type: str | None) -> Any:
    """What Bolt's ``parse_body`` reads, except for one slip of it: Bolt takes any form body that
    contains the word "payload" anywhere (``/apikeys owner payload-team``) for an interaction, finds
    no ``payload=`` field and reads nothing, so the command went unanswered. A form without that
    field is read as the flat form it is."""
    data = parse_body(text, media_type)
    if data == {} and text and not (media_type == "application/json" or text.startswith("{")):
        form = dict(parse_qsl(text, keep_blank_values=True))
        if "payload" not in form:
            return form
    return data


def shape_problem(body: bytes, content_type: str | None) -> str | None:
    """Why a (signed) body is not shaped like one of Slack's requests, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    media_type = content_type.split(";")[0] if content_type else None  # as Bolt's extract_content_type
    as_json = media_type == "application/json" or text.startswith("{")
    try:
        data = parse_slack_body(text, media_type)  # what Bolt is handed (see SlackRequestHandler in app.py)
    except (ValueError, RecursionError):
        return "the body is not JSON" if as_json else "the payload is not JSON"
    if not isinstance(data, dict):
        return "the payload is not a JSON object"
    flat = not as_json and not _has_payload_field(text)  # a slash command (or ssl_check): fields that are strings
    for check in (_event_problem, _view_problem, _actions_problem, _id_problem, _response_urls_problem,
                  _command_problem):
        problem = check(data)
        if problem:
            return problem
    return _ids_problem(data, "", ids_allowed=flat, depth=0)


def _has_payload_field(text: str) -> bool:
    return "payload" in text and any(name == "payload" for name, _ in parse_qsl(text, keep_blank_values=True))


def _ids_problem(data: dict, where: str, ids_allowed: bool, depth: int) -> str | None:
    """``user``, ``team``, ``channel``, ``enterprise`` and ``authorizations`` in ``data`` and in
    every object that Bolt looks into for ids, as request/internals.py reads them."""
    if depth > MAX_NESTING:
        return f"{where.rstrip('.')} is nested too deeply"
    for name in ID_FIELDS:
        value = data.get(name)
        if value is not None and not isinstance(value, dict) and not (ids_allowed and isinstance(value, str)):
            return f"{where}{name} is not {'an id or an object' if ids_allowed else 'an object'}"
    if data.get("authorizations") is not None and not _list_of_objects(data["authorizations"]):
        return f"{where}authorizations is not a list of objects"
    for i, authorization in enumerate(data.get("authorizations") or ()):
        problem = _ids_problem(authorization, f"{where}authorizations[{i}].", True, depth + 1)
        if problem:
            return problem
    for name in LOOKED_INTO:
        if isinstance(data.get(name), dict):
            problem = _ids_problem(data[name], f"{where}{name}.", True, depth + 1)
            if problem:
                return problem
    return None


def _response_urls_problem(data: dict) -> str | None:
    if "response_urls" not in data:
        return None
    if not _list_of_objects(data["response_urls"]):
        return "response_urls is not a list of objects"
    if len(data["response_urls"]) > 1 and "response_url" not in data:
        # Slack sends one per conversation select in a modal; Bolt 1.x then fails building the
        # request's context (it logs through a logger it has not set yet): a KeyError, every time.
        return "more than one response_url, which Bolt cannot read"
    return None


def _list_of_objects(value: Any, empty: bool = True) -> bool:
    return isinstance(value, list) and (empty or bool(value)) and all(isinstance(item, dict) for item in value)


def _event_problem(data: dict) -> str | None:
    if "event" not in data:
        return None
    event = data["event"]
    if not isinstance(event, dict):
        return "event is not an object"
    if event.get("assistant_thread") is not None and not isinstance(event["assistant_thread"], dict):
        return "event.assistant_thread is not an object"
    if event.get("type") == "message" and not isinstance(event.get("channel"), str):
        return "a message event without a channel id"
    if event.get("type") == "function_executed" and "function" in event and not isinstance(event["function"], dict):
        return "event.function is not an object"
    return None


def _view_problem(data: dict) -> str | None:
    if "view" not in data:
        return None
    view = data["view"]
    if not isinstance(view, dict):
        return "view is not an object"
    if view.get("callback_id") is not None and not isinstance(view["callback_id"], str):
        return "view.callback_id is not a string"
    if data.get("type") == "view_submission" and "callback_id" in view:
        if "type" not in view:
            return "the view has no type"
        if view["type"] == "workflow_step" and "workflow_step" not in data:
            return "a workflow step's view_submission without workflow_step"
    return None


def _actions_problem(data: dict) -> str | None:
    kind = data.get("type")
    if "actions" not in data:
        return "actions is missing" if kind == "interactive_message" and "callback_id" in data else None
    actions = data["actions"]
    if not _list_of_objects(actions, empty=kind not in ("block_actions", "interactive_message")):
        return "actions is not a list of actions"
    if kind == "block_actions" and not all(isinstance(action.get("action_id"), str) for action in actions):
        return "an action has no action_id"
    return None


def _id_problem(data: dict) -> str | None:
    """The ids that listeners are matched on: strings (a pattern cannot search anything else)."""
    for name in ("callback_id", "action_id"):
        if data.get(name) is not None and not isinstance(data[name], str):
            return f"{name} is not a string"
    if data.get("type") == "workflow_step_edit" and "callback_id" in data and "workflow_step" not in data:
        return "a workflow_step_edit without workflow_step"
    return None


def _command_problem(data: dict) -> str | None:
    if "command" not in data:
        return None
    for name in SLASH_COMMAND_FIELDS:
        if name in data and not isinstance(data[name], str):
            return f"the command's {name} is not a string"
    return None


class _Dispatch(threading.local):
    """What Bolt did with the request this thread is handling."""

    listeners = 0  # listeners it ran
    error: BaseException | None = None  # what it caught and answered 500 for


def _watch(app: Any, seen: _Dispatch) -> bool:
    """Have ``app`` (a Bolt App) tell ``seen`` when it runs a listener (``listener_runner.run``, public)
    and what error it catches in ``dispatch`` (``_middleware_error_handler``: Bolt has no public seam
    for it; slack-bolt is pinned in pyproject.toml, and ``tests/test_library_internals.py`` fails
    loudly when it moves). Raises when this Bolt has neither: the gate would silently pass 500s."""
    runner = getattr(app, "listener_runner", None)
    handler = getattr(app, "_middleware_error_handler", None)
    if not (callable(getattr(runner, "run", None)) and callable(getattr(handler, "handle", None))):
        raise RuntimeError("this slack_bolt has no listener_runner.run or _middleware_error_handler.handle: "
                           "bot.slack.gate must be updated for it")
    run, handle = runner.run, handler.handle

    def counted_run(*args, **kwargs):
        seen.listeners += 1
        return run(*args, **kwargs)

    def kept_handle(*args, **kwargs):
        seen.error = kwargs.get("error", args[0] if args else None)
        return handle(*args, **kwargs)

    runner.run = counted_run
    handler.handle = kept_handle
    return True


class SlackGate:
    def __init__(self, bolt_wsgi, signing_secret: str):
        self.bolt_wsgi = bolt_wsgi
        self.app = getattr(bolt_wsgi, "app", None)  # the Bolt App behind the gate
        self.verifier = SignatureVerifier(signing_secret)
        self.seen = _Dispatch()
        self.watching = _watch(self.app, self.seen)

    def __call__(self, environ: dict, start_response):
        try:
            body = read_body(environ, MAX_BODY)
        except HttpError as exc:
            log.info(fields(event="slack_request", outcome="unreadable_body", status=exc.status))
            message = "request too large" if exc.status == 413 else exc.message
            return _json_response(start_response, STATUS_TEXT[exc.status], {"error": message})
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
        try:
            signed = bool(timestamp and signature) and self.verifier.is_valid(body, timestamp, signature)
        except ValueError:  # a timestamp that is not a number
            signed = False
        if not signed:
            log.info(fields(event="slack_request", outcome="bad_signature"))
            return _json_response(start_response, "401 Unauthorized", {"error": "invalid or expired Slack signature"})
        problem = shape_problem(body, environ.get("CONTENT_TYPE"))
        if problem:
            log.info(fields(event="slack_request", outcome="malformed", problem=problem))
            return _json_response(start_response, "400 Bad Request", {"error": f"not a Slack request: {problem}"})
        for name in NOT_FOR_BOLT:
            environ.pop(name, None)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))  # also for a chunked body, which Bolt would read as empty
        return self._dispatch(environ, start_response)

    def _dispatch(self, environ: dict, start_response):
        self.seen.listeners, self.seen.error = 0, None
        answer: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], exc_info=None) -> None:
            answer["status"], answer["headers"] = status, headers

        try:
            result = self.bolt_wsgi(environ, keep)
        except Exception as exc:  # Bolt could not make sense of a signed request: refuse it, change nothing
            if self.seen.listeners:
                raise  # a listener ran: nobody can say that nothing changed
            log.warning(fields(event="slack_request", outcome="rejected", error=type(exc).__name__))
            return _json_response(start_response, "400 Bad Request", {"error": "not a Slack request"})
        status = answer.get("status", "500 Internal Server Error")
        if status.startswith("5") and self._misread():
            log.warning(fields(event="slack_request", outcome="rejected", error=type(self.seen.error).__name__))
            return _json_response(start_response, "400 Bad Request", {"error": "not a Slack request"})
        start_response(status, answer.get("headers", []))
        return result

    def _misread(self) -> bool:
        """Whether Bolt's 5xx came from reading a value of the wrong shape, before any listener ran."""
        return self.watching and self.seen.listeners == 0 and isinstance(self.seen.error, READING_ERRORS)
