"""Events API listeners (the manifest subscribes to channel messages for leak watch)."""

from __future__ import annotations

from slack_bolt import App

from storage import Store


def register(app: App, store: Store) -> None:
    @app.event("message")
    def on_message(ack) -> None:
        ack()  # answered at once so Slack does not retry; leak watch reads these
