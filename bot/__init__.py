"""apikeys-bot: the Slack app, the key API server and the ``apikeys`` command line."""
