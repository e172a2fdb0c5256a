"""``POST /slack/events``: handed to the Slack app (``bot.slack``, behind its signature gate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .routes import Route

if TYPE_CHECKING:
    from .app import KeyApiApp


def slack_events(app: KeyApiApp, environ: dict, start_response):
    return app.slack_app(environ, start_response)


ROUTES = [Route("/slack/events", ("POST",), slack_events, "slack_events",
                off=lambda app: app.slack_off if app.slack_app is None else None,
                undocumented="Slack's own interface: signed requests that only Slack sends (the README's Slack setup "
                             "has the app's side)")]
