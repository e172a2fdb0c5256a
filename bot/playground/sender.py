"""Requests to the app the way Slack sends them: signed slash commands, clicks and events.

``SlackSender`` signs each body with ``X-Slack-Request-Timestamp`` (from ``time.time()``, so
freezegun controls it) and ``X-Slack-Signature`` computed by slack_sdk's ``SignatureVerifier``, and
hands it to a transport: ``HttpTransport`` POSTs it to ``<app_url>/slack/events`` (the playground,
and the tests that boot the real server); the tests' in-process transport dispatches it to a Bolt
app directly. Payload shapes follow what Slack really sends, including the quirk that
``block_actions`` payloads for ephemeral messages have no ``message`` key.

The ``response_url``\\ s it hands out, and the users, teams and channels it names, come from the
stand-in (``slackstub.SlackStub``), which also checks every slash-command ack against Slack's limits.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

from .slackstub import ADMIN_USER, APP_ID, OWN_TEAM, SlackStub

__all__ = ["EVENTS_PATH", "FORM", "JSON", "USER_AGENT", "VERIFICATION_TOKEN", "HttpTransport", "SlackReply",
           "SlackSender", "Transport"]

EVENTS_PATH = "/slack/events"
VERIFICATION_TOKEN = "legacy-verification-token"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_ids = itertools.count(1)

Transport = Callable[[bytes, dict[str, str], str], tuple[int, dict[str, str], str]]
"""``transport(body, headers, path) -> (status, lower-case headers, text)``: delivers one request to the app."""


@dataclass
class SlackReply:
    """The app's answer to one request.

    ``body`` is the parsed JSON when the answer is JSON, else the text (``""`` for an empty ack).
    ``headers`` has lower-case names. ``sent`` is what was sent (command fields, interaction
    payload or event envelope); ``response_url`` the one given to the app (None for events).
    ``elapsed`` is the time the app took to answer, in seconds (Slack gives up after 3).
    """

    status: int
    headers: dict[str, str]
    text: str
    body: Any
    sent: dict[str, Any]
    response_url: str | None = None
    elapsed: float = 0.0


class HttpTransport:
    """POST each request over HTTP to the app at ``app_url`` (e.g. ``http://127.0.0.1:PORT``)."""

    def __init__(self, app_url: str, timeout: float = 10.0):
        self.app_url = app_url.rstrip("/")
        self.timeout = timeout

    def __call__(self, body: bytes, headers: dict[str, str], path: str = EVENTS_PATH) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(self.app_url + path)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text
        finally:
            conn.close()


class SlackSender:
    """Send signed Slack requests to the app: ``app`` is its base URL (``http://127.0.0.1:PORT``,
    requests go over HTTP) or a ``Transport``.

    ``stub`` (a started ``SlackStub``) issues the ``response_url``\\ s and knows the users (for
    ``user_name`` and the clicking user's team) and the bot user (for event authorizations).
    """

    def __init__(self, app: str | Transport, signing_secret: str, stub: SlackStub, *,
                 timeout: float = 10.0, api_app_id: str = APP_ID,
                 verification_token: str = VERIFICATION_TOKEN):
        self.transport: Transport = HttpTransport(app, timeout) if isinstance(app, str) else app
        self.signing_secret = signing_secret
        self.stub = stub
        self.api_app_id = api_app_id
        self.verification_token = verification_token

    # ------------------------------------------------------------------ signing and sending

    def signed_headers(self, body: bytes | str, timestamp: str | int | None = None,
                       secret: str | None = None) -> dict[str, str]:
        """``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` for ``body``.

        ``timestamp`` defaults to now (``time.time()``); pass an old one for a stale request, or
        another ``secret`` for a wrongly signed one.
        """
        ts = str(int(time.time()) if timestamp is None else timestamp)
        verifier = SignatureVerifier(self.signing_secret if secret is None else secret)
        signature = verifier.generate_signature(timestamp=ts, body=body)
        assert signature is not None
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    def raw(self, body: bytes, headers: Mapping[str, str], *, path: str = EVENTS_PATH
            ) -> tuple[int, dict[str, str], str]:
        """POST ``body`` with exactly ``headers`` (no signing); return (status, headers, text)."""
        status, out_headers, text, _ = self._post(body, dict(headers), path)
        return status, out_headers, text

    def _post(self, body: bytes, headers: dict[str, str], path: str = EVENTS_PATH
              ) -> tuple[int, dict[str, str], str, float]:
        started = time.perf_counter()
        status, out_headers, text = self.transport(body, headers, path)
        return status, out_headers, text, time.perf_counter() - started

    def _send_signed(self, body: bytes, content_type: str, sent: dict[str, Any],
                     response_url: str | None, extra: Mapping[str, str] | None = None) -> SlackReply:
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT, "Accept": "*/*",
                   **self.signed_headers(body), **(extra or {})}
        status, out_headers, text, elapsed = self._post(body, headers)
        parsed: Any = text
        if text and "json" in out_headers.get("content-type", ""):
            try:
                parsed = json.loads(text)
            except ValueError:
                pass
        if isinstance(parsed, dict) and ("blocks" in parsed or "text" in parsed):
            # An ack with a message (a slash command's answer) is shown by Slack like any other message.
            what = f"ack of {sent['command']}" if isinstance(sent.get("command"), str) else "ack"
            self.stub.check_limits(what, parsed)
        return SlackReply(status, out_headers, text, parsed, sent, response_url, elapsed)

    # ------------------------------------------------------------------ payload helpers

    def _user_name(self, user: str) -> str:
        with self.stub.lock:
            return self.stub.users.get(user, {}).get("name", user.lower())

    def _user_team(self, user: str, default: str) -> str:
        with self.stub.lock:
            return self.stub.users.get(user, {}).get("team_id", default)

    def _team_domain(self, team: str) -> str:
        with self.stub.lock:
            return self.stub.teams.get(team, team.lower())

    def _channel_name(self, channel: str) -> str:
        with self.stub.lock:
            return self.stub.channels.get(channel, channel.lower())

    @staticmethod
    def _trigger_id() -> str:
        n = next(_ids)
        return f"{1000000000 + n}.{2000000000 + n}.{n:032x}"

    @staticmethod
    def _action_ts() -> str:
        return f"{time.time():.6f}"

    # ------------------------------------------------------------------ slash commands

    def command(self, text: str, *, user: str = ADMIN_USER, team: str = OWN_TEAM,
                channel: str = "C0INCIDENT", command: str = "/apikeys",
                response_url: str | None = None) -> SlackReply:
        """Send a slash command, form-encoded with the fields Slack sends, in Slack's order.

        A fresh ``stub.response_url("cmd")`` is used unless ``response_url`` is given.
        """
        response_url = response_url or self.stub.response_url("cmd")
        fields = {
            "token": self.verification_token,
            "team_id": team,
            "team_domain": self._team_domain(team),
            "channel_id": channel,
            "channel_name": self._channel_name(channel),
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self._trigger_id(),
        }
        return self._send_signed(urlencode(fields).encode("utf-8"), FORM, fields, response_url)

    # ------------------------------------------------------------------ interactions

    def click(self, action_id: str, value: str | None = None, *, user: str = ADMIN_USER,
              user_team: str | None = None, team: str = OWN_TEAM, channel: str = "C0INCIDENT",
              response_url: str | None = None, block_id: str = "b",
              state: dict[str, Any] | None = None, selected_option: dict[str, Any] | None = None,
              ephemeral: bool = True, text: str | None = None, message_ts: str | None = None,
              message_blocks: list[dict[str, Any]] | None = None) -> SlackReply:
        """Send a ``block_actions`` interaction (``payload=<json>``, form-encoded) like Slack.

        A button click by default; with ``selected_option`` a ``static_select`` choice. ``text``
        is the button's visible text (defaults to ``value``). ``user_team`` defaults to the
        user's team in ``stub.users``. For ``ephemeral=True`` (the default) the payload has no
        ``message`` key, as on Slack; with ``ephemeral=False`` it carries a ``message`` from the
        bot with ``message_blocks``. A fresh ``stub.response_url("click")`` is used unless
        ``response_url`` is given (pass the command's to keep one message thread).
        """
        response_url = response_url or self.stub.response_url("click")
        message_ts = message_ts or self._message_ts()
        if selected_option is not None:
            action: dict[str, Any] = {"type": "static_select", "action_id": action_id,
                                      "block_id": block_id, "selected_option": selected_option,
                                      "action_ts": self._action_ts()}
        else:
            action = {"action_id": action_id, "block_id": block_id,
                      "text": {"type": "plain_text", "text": text if text is not None else str(value),
                               "emoji": True},
                      "value": value, "type": "button", "action_ts": self._action_ts()}
            if value is None:  # Slack omits the value of a button that has none
                del action["value"]
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": self._user_name(user), "name": self._user_name(user),
                     "team_id": user_team or self._user_team(user, team)},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": ephemeral},
            "trigger_id": self._trigger_id(),
            "team": {"id": team, "domain": self._team_domain(team)},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self._channel_name(channel)},
        }
        if not ephemeral:
            payload["message"] = {"user": self.stub.bot_user_id, "type": "message", "ts": message_ts,
                                  "bot_id": self.stub.bot_id, "app_id": self.api_app_id,
                                  "text": "", "team": team, "blocks": message_blocks or []}
        payload["state"] = {"values": state or {}}
        payload["response_url"] = response_url
        payload["actions"] = [action]
        body = urlencode({"payload": json.dumps(payload)}).encode("utf-8")
        return self._send_signed(body, FORM, payload, response_url)

    @staticmethod
    def _message_ts() -> str:
        """A message ts for interactions on messages the stub did not post."""
        n = next(_ids)
        return f"1690000000.{n:06d}"

    # ------------------------------------------------------------------ events

    def event(self, event: dict[str, Any], *, event_id: str | None = None,
              retry_num: int | None = None, retry_reason: str = "http_timeout",
              team: str = OWN_TEAM) -> SlackReply:
        """Send an Events API ``event_callback`` envelope (JSON) around ``event``.

        With ``retry_num``, adds ``X-Slack-Retry-Num``/``X-Slack-Retry-Reason`` as Slack does when
        it redelivers (reuse the first delivery's ``event_id`` for a realistic retry).
        """
        event_id = event_id or f"Ev{next(_ids):08d}APIKEYS"
        envelope = {
            "token": self.verification_token,
            "team_id": team,
            "context_team_id": team,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": team, "user_id": self.stub.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }
        extra = None
        if retry_num is not None:
            extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return self._send_signed(json.dumps(envelope).encode("utf-8"), JSON, envelope, None, extra)

    def url_verification(self, challenge: str = "challenge-token") -> SlackReply:
        """Send the ``url_verification`` handshake Slack sends when the Request URL is set."""
        body = {"token": self.verification_token, "challenge": challenge, "type": "url_verification"}
        return self._send_signed(json.dumps(body).encode("utf-8"), JSON, body, None)
