"""The Slack app (Bolt for Python): ``/apikeys``, the revoke flow and the audit channel."""

from .app import create_app, create_slack_wsgi, make_client, start_delivery

__all__ = ["create_app", "create_slack_wsgi", "make_client", "start_delivery"]
