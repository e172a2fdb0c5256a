"""Every route of the server, in one table: the route families' declarations, in dispatch order."""

from __future__ import annotations

from . import auth, github, keys, manage, operations, reveal, slack
from .routes import RouteTable

ROUTES = RouteTable([*keys.ROUTES, *manage.ROUTES, *auth.ROUTES, *github.ROUTES, *operations.ROUTES, *reveal.ROUTES,
                     *slack.ROUTES])
