"""What every request the bot sends out has in common (Slack's Web API and response_urls,
GitHub's public keys): a User-Agent naming only apikeys-bot, and no redirect ever followed (a 3xx
is returned as the error it is: a redirect would take the request, and a token it carries, to a
host nobody checked)."""

from __future__ import annotations

import urllib.request
from importlib.metadata import PackageNotFoundError, version

try:
    USER_AGENT = f"apikeys-bot/{version('apikeys-bot')}"
except PackageNotFoundError:  # run from a source tree that was not installed
    USER_AGENT = "apikeys-bot"


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is returned as an ``HTTPError``, never followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's signature
        return None


def open_url(request: urllib.request.Request, *, timeout: float, ssl=None, proxy: str | None = None):
    """``urllib``'s ``open`` without redirects (and with the proxy and TLS context given, if any)."""
    handlers: list[urllib.request.BaseHandler] = [NoRedirects()]
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    if ssl is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl))
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout)
