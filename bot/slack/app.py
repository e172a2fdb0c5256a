"""The Bolt app: listeners grouped by kind (``commands``, ``actions``, ``events``), module-level
functions each module registers with ``register(app)``. One middleware gives every listener the
store and the actor in Bolt's ``context``; authorization is declared per listener (``authz``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from slack_bolt import App, BoltResponse
from slack_bolt.logger import get_bolt_logger
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk import WebClient

from storage import Store

from ..config import Settings
from . import actions, commands, events, reply
from .authz import own_workspace_only
from .context import actor_from_body
from .delivery import Deliverer
from .errors import report
from .gate import SlackGate, parse_slack_body

if TYPE_CHECKING:
    from slack_bolt.request import BoltRequest

log = logging.getLogger("apikeys.slack")

def make_client(settings: Settings) -> WebClient:
    """The Web API client (our User-Agent, no redirects)."""
    return reply.ApiClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=10,
                           retry_handlers=reply.retry_handlers())


class _NotOurs(logging.Filter):
    """Drops Bolt's "`token` will be unused" warning: Bolt reads SLACK_BOT_TOKEN from the environment
    even though we hand it the client made with that very token, and warned at every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_BOLT_START = _NotOurs()


def create_app(settings: Settings, store: Store, *, client: WebClient | None = None,
               socket_mode: bool = False) -> App:
    client = client or make_client(settings)
    bolt_log = get_bolt_logger(App)
    if _BOLT_START not in bolt_log.filters:
        bolt_log.addFilter(_BOLT_START)
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret if not socket_mode else None,
        request_verification_enabled=not socket_mode,
        token_verification_enabled=False,  # auth.test happens on the first request, not at import
        process_before_response=False,
        raise_error_for_unhandled_request=False,
    )

    @app.middleware
    def our_client(context, next):
        """Bolt builds a plain WebClient per request from ``app.client``: hand listeners ours instead
        (our User-Agent, and no redirect ever followed, so the bot token never leaves SLACK_API_URL)."""
        context["client"] = reply.ApiClient(
            token=context.bot_token or client.token, base_url=client.base_url, timeout=client.timeout,
            ssl=client.ssl, proxy=client.proxy, team_id=context.team_id, logger=client.logger,
            retry_handlers=client.retry_handlers.copy())
        return next()

    replier = reply.Replier(settings.slack_api_url)  # replies may also go to this app's own API host

    @app.middleware
    def store_and_actor(context, body, next):
        """The key store, the replier, where work after the ack runs, and who is acting and whether
        they are in our workspace, once per request."""
        own = context.authorize_result  # from auth.test: the installation's workspace (and Grid org)
        context["store"] = store
        context["reply"] = replier
        context["after_ack"] = app.listener_runner.listener_executor.submit
        context["public_url"] = settings.public_url  # one-time links to rotated keys' secrets
        context["actor"] = actor_from_body(body if isinstance(body, dict) else {}, own.team_id if own else None,
                                           store, own.enterprise_id if own else None)
        return next()

    app.middleware(own_workspace_only)  # after the actor is known: another workspace gets nothing at all

    @app.error
    def on_error(error: Exception, body: dict) -> BoltResponse | None:
        report(error, body, replier=replier)
        return None

    commands.register(app)
    actions.register(app)
    events.register(app)
    return app


def start_delivery(store: Store, client: WebClient) -> Deliverer:
    deliverer = Deliverer(store, client).start()
    store.outbox.on_commit.append(deliverer.wake)  # deliver right after the commit that queued a post
    return deliverer


def bolt_request(raw_body: bytes | str, query: str | None, headers: dict) -> BoltRequest:
    """A Bolt request for a body as Slack sent it, parsed as the gate parsed it: where Bolt's own
    parser reads nothing (``gate.parse_slack_body``) the gate's reading is handed to Bolt. The WSGI
    handler and the in-process scenario tests both build requests here."""
    from slack_bolt.context import BoltContext
    from slack_bolt.request import BoltRequest
    from slack_bolt.request.internals import build_context

    if isinstance(raw_body, bytes):
        raw_body = raw_body.decode("utf-8")
    request = BoltRequest(body=raw_body, query=query, headers=headers)
    if not request.body and request.raw_body:  # Bolt read nothing: see parse_slack_body
        body = parse_slack_body(request.raw_body, request.content_type)
        if body:
            request.body = body
            request.context = build_context(BoltContext({}), body)
    return request


def _request_handler(app: App):
    """Bolt's WSGI adapter, handing Bolt the request as ``bolt_request`` builds it."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    class RequestHandler(SlackRequestHandler):
        def dispatch(self, request):
            return self.app.dispatch(bolt_request(request.get_body(), request.query_string, request.get_headers()))

    return RequestHandler(app)


def create_slack_wsgi(settings: Settings, store: Store):
    """The WSGI callable for ``POST /slack/events`` (HTTP mode), plus the audit deliverer."""
    client = make_client(settings)
    start_delivery(store, client)
    if not settings.slack_signing_secret:
        return None  # Socket Mode only: no HTTP route accepts Slack requests without a signing secret
    return SlackGate(_request_handler(create_app(settings, store, client=client)), settings.slack_signing_secret)
