"""Who may call the playground: one check for its page's JSON API and for its Slack stand-in.

Both listen on the operator's machine while the operator browses the web, so any page they visit
can make their browser send requests to them (a form post or a ``no-cors`` fetch needs nobody's
permission), and a DNS rebinding page can even send them "same-origin", under its own host name.
``refusal`` turns such a request away before anything is read or changed:

* origin: ``Sec-Fetch-Site`` and ``Origin`` must say that the request comes from the server's own
  page (``own_pages=True``: the playground), or the request must carry no browser header at all
  (``own_pages=False``: the stand-in serves no page, so every browser request to it is some other
  site's; the bot, slack_sdk and urllib, sends none of them);
* host: ``Host`` must be a name that nobody else's DNS can point at this machine (``HostNames``);
* content type: a body must be one of the media types the route takes (a browser sends
  ``text/plain``, forms and multipart to anyone without asking).

Both servers call ``refusal``; neither has a check of its own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user")
"""What a browser adds to the requests a page makes (the bot never sends any of them)."""


@dataclass(frozen=True)
class Refusal:
    status: int  # 403 (origin, host) or 415 (content type)
    error: str


class HostNames:
    """The host names a request may be addressed to: an address literal (no DNS involved),
    ``localhost`` and ``*.localhost`` (resolved locally by browsers), this machine's name and the
    names given (``--host``)."""

    def __init__(self, *extra: str | None):
        self.names = {"localhost", socket.gethostname().lower().rstrip(".")}
        for name in extra:
            if name and name.strip() not in ("0.0.0.0", "::", "[::]"):
                self.names.add(name.strip().strip("[]").lower().rstrip("."))

    def __contains__(self, name: str) -> bool:
        try:
            ipaddress.ip_address(name)
            return True  # an address literal cannot be rebound by anyone's DNS
        except ValueError:
            return name in self.names or name.endswith(".localhost")


def host_and_port(netloc: str, default_port: int) -> tuple[str, int]:
    """``("127.0.0.1", 3000)`` from ``127.0.0.1:3000`` (``ValueError`` when it is not a host[:port])."""
    parts = urlsplit("//" + netloc)
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        raise ValueError(netloc)
    return parts.hostname.lower().rstrip("."), parts.port or default_port


def wsgi_headers(environ: Mapping[str, object]) -> dict[str, str]:
    """A WSGI request's headers by lower-case name (``Host`` falls back to SERVER_NAME:SERVER_PORT)."""
    headers = {key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items()
               if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    headers.setdefault("host", f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}")
    return headers


def refusal(headers: Mapping[str, str], *, names: HostNames, own_pages: bool, media_types: Collection[str] | None,
            what: str, scheme: str = "http") -> Refusal | None:
    """Why a request (``headers`` by lower-case name) must not be answered, or None.

    ``media_types``: the body types taken (``""``: no ``Content-Type``), None for a request without
    a body. ``what`` names the server in the error ("the playground API")."""
    if not own_pages:
        sent = [name for name in BROWSER_HEADERS if name in headers]
        if sent:
            return Refusal(403, f"refused: {what} answers the bot only, and this request comes from a browser "
                                f"({', '.join(sent)}); nothing changed")
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return Refusal(403, f"refused: the request comes from another site (Sec-Fetch-Site: {site[:40]}); "
                            "nothing changed")
    default_port = 443 if scheme == "https" else 80
    try:
        host = host_and_port(headers.get("host", ""), default_port)
    except ValueError:
        return Refusal(403, "refused: the request has no valid Host header; nothing changed")
    if host[0] not in names:
        return Refusal(403, f"refused: {what} answers only under localhost, an IP address or its --host name, "
                            f"not {host[0][:80]!r} (a DNS rebinding guard); nothing changed")
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        try:
            same = (parts.scheme in ("http", "https") and not parts.path
                    and host_and_port(parts.netloc, 443 if parts.scheme == "https" else 80) == host)
        except ValueError:
            same = False
        if not same:
            return Refusal(403, f"refused: the request comes from another origin ({origin[:80]}); nothing changed")
    if media_types is not None:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in media_types:
            taken = " or ".join(t for t in media_types if t)
            return Refusal(415, f"refused: {what} takes a body with Content-Type: {taken} only, "
                                f"not {media_type[:60] or 'none'!r}; nothing changed")
    return None
