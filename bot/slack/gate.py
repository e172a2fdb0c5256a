"""The gate in front of Bolt on ``POST /slack/events``.

Only correctly signed requests (Slack's v0 signature, timestamp within 5 minutes) reach Bolt;
anything else gets 401 and changes nothing. A signed request whose body does not have the
shape Slack sends (a payload that is not a JSON object, actions that are not a list of objects
with an ``action_id``, a user or team that is not an object …) gets 400, so that no hostile or
broken input can make Bolt fail with a 500.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

from ..logs import fields

log = logging.getLogger("apikeys.slack")

MAX_BODY = 1024 * 1024
OBJECT_FIELDS = ("user", "team", "channel", "enterprise", "event")  # what Bolt reads; the rest we check where used
LIST_FIELDS = ("authorizations",)


def _json_response(start_response, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def shape_problem(body: bytes, content_type: str) -> str | None:
    """Why a (signed) body is not shaped like one of Slack's requests, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if content_type.startswith("application/json"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return "the body is not JSON"
        return _object_problem(data)
    form = parse_qs(text, keep_blank_values=True)
    if "payload" not in form:
        return None  # a slash command: flat form fields
    try:
        data = json.loads(form["payload"][0])
    except (ValueError, RecursionError):
        return "the payload is not JSON"
    problem = _object_problem(data)
    if problem is None and "actions" in data:
        actions = data["actions"]
        if not isinstance(actions, list) or not actions:
            return "actions is not a list of actions"
        for action in actions:
            if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
                return "an action has no action_id"
    return problem


def _object_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "the payload is not a JSON object"
    for name in OBJECT_FIELDS:
        if name in data and not isinstance(data[name], dict) and not (data[name] is None and name != "event"):
            return f"{name} is not an object"
    for name in LIST_FIELDS:
        if name in data and not isinstance(data[name], list):
            return f"{name} is not a list"
    return None


class SlackGate:
    def __init__(self, bolt_wsgi, signing_secret: str):
        self.bolt_wsgi = bolt_wsgi
        self.app = getattr(bolt_wsgi, "app", None)  # the Bolt App behind the gate
        self.verifier = SignatureVerifier(signing_secret)

    def __call__(self, environ: dict, start_response):
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            return _json_response(start_response, "413 Payload Too Large", {"error": "request too large"})
        body = environ["wsgi.input"].read(int(length))
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
        signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
        try:
            signed = bool(timestamp and signature) and self.verifier.is_valid(body, timestamp, signature)
        except ValueError:  # a timestamp that is not a number
            signed = False
        if not signed:
            log.info(fields(event="slack_request", outcome="bad_signature"))
            return _json_response(start_response, "401 Unauthorized", {"error": "invalid or expired Slack signature"})
        problem = shape_problem(body, environ.get("CONTENT_TYPE", ""))
        if problem:
            log.info(fields(event="slack_request", outcome="malformed", problem=problem))
            return _json_response(start_response, "400 Bad Request", {"error": f"not a Slack request: {problem}"})
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            return self.bolt_wsgi(environ, start_response)
        except Exception as exc:  # Bolt could not make sense of a signed request: refuse it, change nothing
            log.warning(fields(event="slack_request", outcome="rejected", error=type(exc).__name__))
            return _json_response(start_response, "400 Bad Request", {"error": "not a Slack request"})
