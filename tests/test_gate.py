"""The gate in front of Bolt on ``POST /slack/events`` (``bot/slack/gate.py``).

* ``shape_problem`` lets every shape Slack really sends through: commands, every kind of
  interaction (a legacy attachment's actions have a ``name``, no ``action_id``), Events API
  bodies with the objects Slack nests in them (a ``team_join``'s user, a ``channel_created``'s
  channel, a reaction's item, an assistant thread). What it refuses is in ``tests/test_fuzz.py``.
* Around a small Bolt app of its own: a 5xx from Bolt is a 400 only when no listener ran and
  Bolt failed reading the body; Bolt's internal lazy-listener headers are not taken from a request.
* The real server (``python -m bot`` with Slack on): a chunked body is read before the signature
  is checked, and a body that cannot be read is a 400 with a JSON error.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot.slack.gate import SlackGate, shape_problem

from .helpers import ADMIN, MEMBER
from .servers import ServerProcess, raw_exchange, start_server
from .slackhttp import FORM, JSON
from .slackstub import OTHER_TEAM, OWN_TEAM, SlackStub

SECRET = "gate-signing-secret-91b4"
USER = {"id": MEMBER, "username": "max", "name": "max", "team_id": OWN_TEAM}
TEAM = {"id": OWN_TEAM, "domain": "own"}
CHANNEL = {"id": "C0INCIDENT", "name": "incident"}
MODAL = {"id": "V0MODAL", "team_id": OWN_TEAM, "type": "modal", "callback_id": "apikeys.modal",
         "private_metadata": "", "blocks": [{"type": "input", "block_id": "b", "element": {"type": "plain_text_input"}}],
         "state": {"values": {"b": {"a": {"type": "plain_text_input", "value": "x"}}}}, "hash": "1.abc",
         "title": {"type": "plain_text", "text": "Keys"}, "root_view_id": "V0MODAL", "app_id": "A0APIKEYS",
         "external_id": "", "app_installed_team_id": OWN_TEAM, "bot_id": "B0APIKEYS"}
RESPONSE_URL = "https://hooks.slack.com/actions/T0OWN/1/x"
AUTHORIZATIONS = [{"enterprise_id": None, "team_id": OWN_TEAM, "user_id": "UBOT00001", "is_bot": True,
                   "is_enterprise_install": False}]


def _interaction(**fields: Any) -> tuple[str, bytes]:
    payload = {"api_app_id": "A0APIKEYS", "token": "legacy-verification-token", "user": USER, "team": TEAM,
               "enterprise": None, "is_enterprise_install": False, "trigger_id": "1.2.abc", **fields}
    return FORM, urlencode({"payload": json.dumps(payload)}).encode()


def _event(event: dict[str, Any], **fields: Any) -> tuple[str, bytes]:
    envelope = {"token": "legacy-verification-token", "team_id": OWN_TEAM, "context_team_id": OWN_TEAM,
                "context_enterprise_id": None, "api_app_id": "A0APIKEYS", "event": event, "type": "event_callback",
                "event_id": "Ev0001", "event_time": 1700000000, "authorizations": AUTHORIZATIONS,
                "is_ext_shared_channel": False, **fields}
    return JSON, json.dumps(envelope).encode()


COMMAND = {"token": "legacy-verification-token", "team_id": OWN_TEAM, "team_domain": "own", "channel_id": "C0INCIDENT",
           "channel_name": "incident", "user_id": MEMBER, "user_name": "max", "command": "/apikeys", "text": "list",
           "api_app_id": "A0APIKEYS", "is_enterprise_install": "false", "response_url": RESPONSE_URL,
           "trigger_id": "1.2.abc"}
MESSAGE = {"type": "message", "channel": "C0INCIDENT", "user": MEMBER, "text": "hello", "ts": "1700000000.000100",
           "event_ts": "1700000000.000100", "channel_type": "channel", "team": OWN_TEAM,
           "blocks": [{"type": "rich_text", "block_id": "r", "elements": [{"type": "rich_text_section",
                                                                            "elements": [{"type": "text", "text": "hello"}]}]}]}
SLACK_SHAPES: dict[str, tuple[str, bytes]] = {
    "a slash command": (FORM, urlencode(COMMAND).encode()),
    "a slash command, charset in the content type": (FORM + "; charset=utf-8", urlencode(COMMAND).encode()),
    "ssl_check": (FORM, b"ssl_check=1&token=legacy-verification-token"),
    "a click on an ephemeral message": _interaction(
        type="block_actions", container={"type": "message", "message_ts": "1.1", "channel_id": "C0INCIDENT",
                                         "is_ephemeral": True},
        channel=CHANNEL, response_url=RESPONSE_URL, state={"values": {}},
        actions=[{"action_id": "apikeys.revoke", "block_id": "b", "text": {"type": "plain_text", "text": "Revoke"},
                  "value": "{}", "type": "button", "action_ts": "1.3"}]),
    "a click on a public message": _interaction(
        type="block_actions", container={"type": "message", "message_ts": "1.1", "channel_id": "C0INCIDENT",
                                         "is_ephemeral": False}, channel=CHANNEL, response_url=RESPONSE_URL,
        message={"type": "message", "user": "UBOT00001", "ts": "1.1", "bot_id": "B0APIKEYS", "text": "x", "blocks": []},
        actions=[{"action_id": "apikeys.revoke", "block_id": "b", "value": "{}", "type": "button", "action_ts": "1.3"}]),
    "a select in a modal": _interaction(
        type="block_actions", container={"type": "view", "view_id": "V0MODAL"}, view=MODAL,
        actions=[{"type": "static_select", "action_id": "apikeys.revoke.reason", "block_id": "b", "action_ts": "1.3",
                  "selected_option": {"text": {"type": "plain_text", "text": "Rotation"}, "value": "rotation"}}]),
    "a click in the home tab": _interaction(
        type="block_actions", container={"type": "view", "view_id": "V0HOME"},
        view={**MODAL, "id": "V0HOME", "type": "home", "callback_id": ""},
        actions=[{"action_id": "apikeys.list", "block_id": "b", "value": "{}", "type": "button", "action_ts": "1.3"}]),
    "view_submission": _interaction(type="view_submission", view=MODAL, response_urls=[]),
    "view_submission with response_urls": _interaction(type="view_submission", view=MODAL, response_urls=[
        {"block_id": "b", "action_id": "a", "channel_id": "C0INCIDENT", "response_url": RESPONSE_URL}]),
    "view_submission of a workflow step": _interaction(
        type="view_submission", view={**MODAL, "type": "workflow_step"},
        workflow_step={"workflow_step_edit_id": "1", "workflow_id": "2", "step_id": "3"}),
    "view_closed": _interaction(type="view_closed", view=MODAL, is_cleared=False),
    "a global shortcut": _interaction(type="shortcut", callback_id="apikeys.shortcut", action_ts="1.3"),
    "a message shortcut": _interaction(
        type="message_action", callback_id="apikeys.report", action_ts="1.3", message_ts="1.1",
        channel=CHANNEL, response_url=RESPONSE_URL,
        message={"type": "message", "user": MEMBER, "ts": "1.1", "text": "x"}),
    "block_suggestion": _interaction(type="block_suggestion", action_id="apikeys.owner", block_id="b", value="pay",
                                     container={"type": "view", "view_id": "V0MODAL"}, view=MODAL),
    "interactive_message (attachment buttons: name, no action_id)": _interaction(
        type="interactive_message", callback_id="wopr_game", action_ts="1.3", attachment_id="1", message_ts="1.1",
        actions=[{"name": "game", "type": "button", "value": "chess"}], channel=CHANNEL, response_url=RESPONSE_URL,
        is_app_unfurl=False, original_message={"text": "x", "attachments": []}),
    "dialog_submission": _interaction(type="dialog_submission", callback_id="apikeys.dialog", action_ts="1.3",
                                      submission={"name": "x"}, state="", channel=CHANNEL, response_url=RESPONSE_URL),
    "dialog_cancellation": _interaction(type="dialog_cancellation", callback_id="apikeys.dialog", action_ts="1.3",
                                        state="", channel=CHANNEL, response_url=RESPONSE_URL),
    "dialog_suggestion": _interaction(type="dialog_suggestion", callback_id="apikeys.dialog", name="owner",
                                      value="pay", action_ts="1.3", channel=CHANNEL),
    "workflow_step_edit": _interaction(type="workflow_step_edit", callback_id="apikeys.step", action_ts="1.3",
                                       workflow_step={"workflow_id": "1", "step_id": "2", "inputs": {}, "outputs": []}),
    "url_verification": (JSON, json.dumps({"token": "t", "challenge": "abc", "type": "url_verification"}).encode()),
    "app_rate_limited": (JSON, json.dumps({"token": "t", "type": "app_rate_limited", "team_id": OWN_TEAM,
                                           "minute_rate_limited": 1518467820, "api_app_id": "A0APIKEYS"}).encode()),
    "a channel message": _event(MESSAGE),
    "a message by another app": _event({**MESSAGE, "subtype": "bot_message", "bot_id": "B0OTHER", "username": "ci"}),
    "an edited message": _event({"type": "message", "subtype": "message_changed", "channel": "C0INCIDENT",
                                 "hidden": True, "ts": "1.5", "event_ts": "1.5", "channel_type": "channel",
                                 "message": {**MESSAGE, "edited": {"user": MEMBER, "ts": "1.5"}},
                                 "previous_message": MESSAGE}),
    "a deleted message": _event({"type": "message", "subtype": "message_deleted", "channel": "C0INCIDENT",
                                 "hidden": True, "deleted_ts": "1.1", "ts": "1.5", "previous_message": MESSAGE}),
    "a direct message in a thread": _event({**MESSAGE, "channel": "D0DIRECT", "channel_type": "im",
                                            "thread_ts": "1700000000.000001"}),
    "a message with a file": _event({**MESSAGE, "subtype": "file_share", "files": [{"id": "F1", "name": "a.txt"}]}),
    "a message in a Slack Connect channel": _event(
        {**MESSAGE, "user_team": OTHER_TEAM, "source_team": OTHER_TEAM}, is_ext_shared_channel=True,
        enterprise_id="E0ENTERPRISE"),
    "team_join (the user is an object)": _event({"type": "team_join", "event_ts": "1.1", "user": {
        "id": "UNEW00001", "team_id": OWN_TEAM, "name": "new", "profile": {"email": "new@example.com"}}}),
    "channel_created (the channel is an object)": _event({"type": "channel_created", "event_ts": "1.1", "channel": {
        "id": "C0NEW", "name": "new", "created": 1700000000, "creator": MEMBER}}),
    "reaction_added": _event({"type": "reaction_added", "user": MEMBER, "reaction": "eyes", "item_user": MEMBER,
                              "item": {"type": "message", "channel": "C0INCIDENT", "ts": "1.1"}, "event_ts": "1.2"}),
    "app_home_opened": _event({"type": "app_home_opened", "user": MEMBER, "channel": "D0DIRECT", "tab": "home",
                               "event_ts": "1.1", "view": {**MODAL, "type": "home"}}),
    "assistant_thread_started": _event({"type": "assistant_thread_started", "event_ts": "1.1", "assistant_thread": {
        "user_id": MEMBER, "context": {"channel_id": "C0INCIDENT"}, "channel_id": "D0DIRECT", "thread_ts": "1.1"}}),
    "function_executed": _event({"type": "function_executed", "function_execution_id": "Fx1", "event_ts": "1.1",
                                 "function": {"id": "Fn1", "callback_id": "f", "title": "F"}, "inputs": {"a": 1},
                                 "workflow_execution_id": "Wx1"}, bot_access_token="xwfp-1"),
    "app_uninstalled": _event({"type": "app_uninstalled", "event_ts": "1.1"}),
    "tokens_revoked": _event({"type": "tokens_revoked", "event_ts": "1.1",
                              "tokens": {"oauth": [MEMBER], "bot": ["UBOT00001"]}}),
    "an org-wide install's event": _event(MESSAGE, enterprise_id="E0ENTERPRISE", authorizations=[
        {"enterprise_id": "E0ENTERPRISE", "team_id": None, "user_id": "UBOT00001", "is_bot": True,
         "is_enterprise_install": True}]),
}


@pytest.mark.parametrize("what", list(SLACK_SHAPES))
def test_every_shape_slack_sends_gets_through_the_gate(what: str):
    content_type, body = SLACK_SHAPES[what]
    assert shape_problem(body, content_type) is None


def test_objects_nested_deeper_than_slack_nests_them_are_refused():
    """Bolt looks for ids in an event's event, message, item … in turn; Slack nests two or three."""
    event: dict[str, Any] = {"type": "message", "channel": "C0INCIDENT", "ts": "1.1"}
    for _ in range(3):
        event = {"type": "message", "subtype": "message_changed", "channel": "C0INCIDENT", "ts": "1.2", "message": event}
    assert shape_problem(_event(event)[1], JSON) is None
    for _ in range(10):
        event = {"type": "x", "event": event}
    assert shape_problem(_event(event)[1], JSON) == ".".join(["event"] * 9) + " is nested too deeply"


def test_several_response_urls_are_refused_by_name():
    """A modal with several conversation selects makes Slack send one response_url for each, and
    Bolt 1.x cannot build the context of such a request (a KeyError, every time): say so."""
    _, body = _interaction(type="view_submission", view=MODAL, response_urls=[
        {"block_id": "b", "action_id": "a", "channel_id": "C0INCIDENT", "response_url": RESPONSE_URL},
        {"block_id": "c", "action_id": "a", "channel_id": "C0AUDIT", "response_url": RESPONSE_URL}])
    assert shape_problem(body, FORM) == "more than one response_url, which Bolt cannot read"


# ======================================================================= around a Bolt app


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as running:
        yield running


def _bolt(stub: SlackStub) -> App:
    return App(client=WebClient(token="xoxb-test", base_url=stub.api_url), signing_secret=SECRET,
               token_verification_enabled=False, process_before_response=False,
               raise_error_for_unhandled_request=False)


def call(gate: SlackGate, body: bytes, content_type: str = FORM,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """The gate as the server calls it, with a correctly signed ``body``."""
    timestamp = str(int(time.time()))
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "SERVER_PROTOCOL": "HTTP/1.1",
               "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp,
               "HTTP_X_SLACK_SIGNATURE": SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body),
               **(headers or {})}
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info=None) -> None:
        answer["status"], answer["headers"] = int(status.split()[0]), {k.lower(): v for k, v in response_headers}

    data = b"".join(gate(environ, start_response))
    return answer["status"], answer["headers"], data


def test_a_bolt_failure_before_any_listener_ran_is_a_400(stub: SlackStub):
    """Bolt answers 500 itself when a middleware or its own logging cannot read a body (it catches
    the error). When no listener ran, nothing changed: a body the gate has no rule for yet is
    refused like the others, with a 400 and a JSON error."""
    app = _bolt(stub)
    ran = []

    @app.middleware
    def misreads(body, next):  # stands for a reading of the body that the gate has no rule for
        if body.get("text") == "misread":
            raise KeyError("a field Bolt expected")
        return next()

    @app.command("/x")
    def command(ack):
        ran.append("command")
        ack("ok")

    gate = SlackGate(SlackRequestHandler(app), SECRET)
    status, headers, data = call(gate, b"command=%2Fx&text=misread")
    assert (status, headers["content-type"]) == (400, "application/json") and "error" in json.loads(data)
    assert ran == []
    assert call(gate, b"command=%2Fx&text=fine")[::2] == (200, b"ok")


def test_a_bolt_failure_that_is_not_about_the_body_or_comes_after_a_listener_is_not_called_bad_input(stub: SlackStub):
    """Slack unreachable (for auth.test, say) is not the request's fault, and once a listener has
    run nobody can say that nothing changed: those 5xx stay what Bolt answered."""
    app = _bolt(stub)

    @app.middleware
    def unreachable(body, next):
        if body.get("text") == "outage":
            raise ConnectionRefusedError("Slack is unreachable")
        return next()

    @app.command("/x")
    def command(ack, body):  # fails before acknowledging: Bolt answers 500 after running it
        raise LookupError("a listener's own bug")

    gate = SlackGate(SlackRequestHandler(app), SECRET)
    assert call(gate, b"command=%2Fx&text=outage")[0] == 500
    assert call(gate, b"command=%2Fx&text=bug")[0] == 500


def test_bolts_lazy_listener_headers_are_not_taken_from_a_request(stub: SlackStub):
    """``X-Slack-Bolt-Lazy-Only`` is how Bolt re-invokes itself for lazy listeners; from a client it
    made Bolt skip the listener, wait out its 3-second ack timer and answer 404."""
    app = _bolt(stub)

    @app.command("/x")
    def command(ack):
        ack("answered")

    gate = SlackGate(SlackRequestHandler(app), SECRET)
    for headers in ({"HTTP_X_SLACK_BOLT_LAZY_ONLY": "1"},
                    {"HTTP_X_SLACK_BOLT_LAZY_ONLY": "1", "HTTP_X_SLACK_BOLT_LAZY_FUNCTION_NAME": "command"}):
        status, _, data = call(gate, b"command=%2Fx&text=", headers=headers)
        assert (status, data) == (200, b"answered"), headers


# ======================================================================= the real server


@pytest.fixture
def slack_server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with SlackStub() as running:
        server = start_server(database_url, tmp_path, {
            "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": running.api_url,
            "APIKEYS_AUDIT_CHANNEL": "C0AUDIT", "APIKEYS_ADMINS": ADMIN})
        try:
            yield server
        finally:
            server.stop()


def _signed_head(body: bytes, content_type: str = FORM) -> bytes:
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
    return (f"POST /slack/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
            f"X-Slack-Request-Timestamp: {timestamp}\r\nX-Slack-Signature: {signature}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()


def test_slack_events_reads_chunked_bodies_and_never_processes_unreadable_ones(slack_server: ServerProcess):
    """A chunked body used to be read as empty (no Content-Length), so a correctly signed one got 401;
    a malformed one got 401 as well, for the wrong reason."""
    command = urlencode({**COMMAND, "text": "help", "response_url": "http://127.0.0.1:9/never"}).encode()
    half = len(command) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, command[:half], len(command) - half, command[half:])
    status, _, data = raw_exchange(slack_server.url, _signed_head(command) + chunked)
    assert status == 200 and json.loads(data)["response_type"] == "ephemeral", (status, data[:200])

    wrong = {}
    # As tests/test_http.py says of granian's parser: refused with 400, read leniently (the body it
    # got is the one whose signature is checked: 401 when it is not what was signed), or waited for
    # while it has not all arrived.
    for what, (rest, allowed) in {
        "a chunk size that is not hex": (b"zz\r\n" + command + b"\r\n0\r\n\r\n", {"400", "401"}),
        "a chunk cut short": (b"%x\r\n%s" % (len(command), command[:10]), {"400", "waits"}),
        "a chunk without its CRLF": (b"%x\r\n%sXX0\r\n\r\n" % (len(command), command), {"400", "200"}),
    }.items():
        try:
            status, headers, data = raw_exchange(slack_server.url, _signed_head(command) + rest, wait=2)
        except TimeoutError:
            outcome = "waits"
        else:
            outcome = str(status)
            if status == 400 and (headers.get("content-type") != "application/json"
                                  or "error" not in json.loads(data or b"{}")):
                outcome = f"400 without a JSON error: {data[:80]!r}"
            if status == 200 and json.loads(data).get("response_type") != "ephemeral":
                outcome = f"200 but not the command's answer: {data[:80]!r}"
        if outcome not in allowed:
            wrong[what] = outcome
    assert wrong == {}
    status, _, data = raw_exchange(slack_server.url, _signed_head(command) + chunked)  # still serving
    assert status == 200 and json.loads(data)["response_type"] == "ephemeral"
    assert "Traceback" not in slack_server.log()
