"""Replying through ``response_url`` (the only way to edit an ephemeral message), with retries; and
the Web API client class. Everything the bot sends to Slack over HTTP goes through here.

A ``response_url`` arrives in the (signed) request, but it is still only a URL someone typed into
a payload: the bot answers only on Slack's response hosts (``hooks.slack.com``,
``hooks.slack-gov.com``, https) and on the host of ``SLACK_API_URL`` (GovSlack, or
the local stand-in of the tests and the playground; ``Replier``, one per app). It never follows a redirect (a 3xx answer is
a failed reply), and it sends a User-Agent naming only itself (slack_sdk's default names the Python
version and the operating system).
"""

from __future__ import annotations

import logging
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackRequestError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient, WebhookResponse

from ..logs import fields, redact
from ..outbound import USER_AGENT, open_url

log = logging.getLogger("apikeys.slack")

SLACK_RESPONSE_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def retry_handlers():
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
    ]


# -- where the bot answers ------------------------------------------------------------------------
def _origin(url: object) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL without user info, or None. URLs with
    whitespace, control or non-ASCII characters are refused outright (parsers disagree on them)."""
    if not isinstance(url, str) or not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or "@" in parts.netloc or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def allowed_response_url(url: object, api_origins: frozenset[tuple[str, str, int]] = frozenset()) -> bool:
    """True for an https URL on Slack's response hosts, or a URL on one of ``api_origins`` (the host
    of ``SLACK_API_URL``: the local stand-in, GovSlack)."""
    origin = _origin(url)
    if origin is None:
        return False
    if origin in api_origins:
        return True
    scheme, host, port = origin
    return scheme == "https" and host in SLACK_RESPONSE_HOSTS and port == 443


def _where(url: object) -> str:
    """What a log line may say about a refused URL: its scheme, host and port, never its path or
    query (a real response_url carries a token in its path)."""
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<unparseable>"
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    return redact(shown)[:120]


# -- HTTP without redirects and with our User-Agent -----------------------------------------------
for _cls, _method in ((WebClient, "_perform_urllib_http_request_internal"),
                      (WebhookClient, "_perform_http_request_internal")):
    if not callable(getattr(_cls, _method, None)):  # the overrides below would silently not apply
        raise ImportError(f"slack_sdk.{_cls.__name__} has no {_method} any more: bot.slack.reply must be "
                          "updated so that no redirect is followed and the User-Agent stays ours")


class _UserAgentPinned(dict):
    """Request headers whose User-Agent is always ours. slack_sdk sets its own default (Python and
    OS versions) in every client it builds, and Bolt builds a client per request from this one's
    headers: the pin holds for those copies too."""

    def __setitem__(self, name, value):
        super().__setitem__(name, USER_AGENT if isinstance(name, str) and name.lower() == "user-agent" else value)

    def update(self, *args, **kwargs):
        for name, value in dict(*args, **kwargs).items():
            self[name] = value


class ApiClient(WebClient):
    """slack_sdk's WebClient with our User-Agent and without following redirects."""

    def __init__(self, *args: Any, **kwargs: Any):
        headers = _UserAgentPinned()
        headers.update(kwargs.get("headers") or {}, **{"User-Agent": USER_AGENT})
        kwargs["headers"] = headers
        super().__init__(*args, **kwargs)
        self.headers["User-Agent"] = USER_AGENT

    def _perform_urllib_http_request_internal(self, url: str, req: urllib.request.Request) -> dict[str, Any]:
        if not url.lower().startswith(("http://", "https://")):
            raise SlackRequestError(f"Invalid URL detected: {url}")
        resp = open_url(req, ssl=self.ssl, proxy=self.proxy, timeout=self.timeout)
        charset = resp.headers.get_content_charset() or "utf-8"
        body: Any = resp.read()
        if resp.headers.get_content_type() != "application/gzip":
            body = body.decode(charset)
        return {"status": resp.code, "headers": resp.headers, "body": body}


class _Webhook(WebhookClient):
    """slack_sdk's WebhookClient (its retries included) with our User-Agent, without redirects."""

    def __init__(self, *args: Any, api_origins: frozenset = frozenset(), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.default_headers["User-Agent"] = USER_AGENT
        self.api_origins = api_origins

    def _perform_http_request_internal(self, url: str, req: urllib.request.Request) -> WebhookResponse:
        if not allowed_response_url(url, self.api_origins):  # checked in send(); here too, whoever calls this
            raise SlackRequestError("refused: not a Slack response_url host")
        resp = open_url(req, ssl=self.ssl, proxy=self.proxy, timeout=self.timeout)
        charset = resp.headers.get_content_charset() or "utf-8"
        return WebhookResponse(url=url, status_code=resp.status, body=resp.read().decode(charset),
                               headers=resp.headers)


# -- replying ---------------------------------------------------------------------------------------
class Replier:
    """How one app answers through ``response_url``: on Slack's response hosts, and on the host of
    the app's own ``SLACK_API_URL`` (owned by the app it serves: two apps in one process, as in the
    tests, never widen each other's hosts). Every text is masked (``logs.redact``) before it leaves."""

    def __init__(self, api_url: str | None = None):
        origin = _origin(api_url) if api_url else None
        self.api_origins: frozenset[tuple[str, str, int]] = frozenset({origin} if origin else ())

    def allowed(self, url: object) -> bool:
        return allowed_response_url(url, self.api_origins)

    def send(self, response_url: str | None, *, replace: bool, text: str, blocks: list[dict] | None = None) -> bool:
        """Replace the message the click came from (``replace=True``) or add a new ephemeral one."""
        if not response_url:
            log.warning("no response_url in the request; cannot answer the user")
            return False
        if not self.allowed(response_url):
            log.warning(fields(event="reply_refused", target=_where(response_url),
                               why="response_url is not on a Slack response host"))
            return False
        payload: dict[str, Any] = {"text": redact(text), "response_type": "ephemeral"}
        payload["replace_original"] = replace
        if blocks is not None:
            payload["blocks"] = blocks
        client = _Webhook(response_url, timeout=5, retry_handlers=retry_handlers(), api_origins=self.api_origins)
        try:
            response = client.send_dict(payload)
        except Exception as exc:  # network failure after retries
            log.error("reply failed: %s", type(exc).__name__)
            return False
        if response.status_code != 200:
            redirect = " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
            log.error("reply failed: HTTP %s%s", response.status_code, redirect)
            return False
        return True


SLACK_ONLY = Replier()  # where no app's context is at hand: Slack's own response hosts only
