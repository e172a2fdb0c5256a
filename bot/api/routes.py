"""The route table: each HTTP route is declared once, as a ``Route`` in the module of its family
(``keys``, ``auth``, ``github``, ``operations``, ``slack``), and everything else is derived from
the table: the dispatch (``KeyApiApp``), the metrics' route label, the 405's ``Allow``, and the
OpenAPI document (``bot.api.openapi``). A route without an operation for one of its methods is a
failing test (``tests/test_openapi.py``), not a silent gap; a route kept out of the document on
purpose says why (``undocumented``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import KeyApiApp

Handler = Callable[["KeyApiApp", dict, Callable], Iterable[bytes]]
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...] | None                # None: any method (forward auth: proxies forward theirs)
    handler: Handler
    label: str                                   # its series in apikeys_request_duration_seconds{route}
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # OpenAPI, by lower-case method
    prefix: bool = False                         # also answers path + "/<anything>" (Envoy's forward auth)
    prefix_operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # those, as "{path}/{path}"
    off: Callable[[KeyApiApp], str | None] | None = None  # why this server does not serve it (a 404), or None
    undocumented: str | None = None              # why it is not in the OpenAPI document
    problems: bool = False                       # its errors are RFC 9457 problem details (the management API)

    @property
    def template(self) -> bool:
        """A path with parameters (``/v1/keys/{id}``): each ``{name}`` is one path segment."""
        return "{" in self.path


PATH_PARAMS = "apikeys.path_params"  # the environ key of a templated route's parameters, by name


def _compiled(path: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", path)
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(f"^{pattern}$")


class RouteTable:
    """Finds the route of a path: an exact path first (one dict lookup), then the prefix routes."""

    def __init__(self, routes: Iterable[Route]):
        self.routes: tuple[Route, ...] = tuple(routes)
        self._exact: dict[str, Route] = {}
        for route in self.routes:
            if route.path in self._exact:
                raise ValueError(f"route {route.path} is declared twice")
            self._exact[route.path] = route
        self._templates = tuple((_compiled(route.path), route) for route in self.routes if route.template)
        self._prefixes = tuple((route.path + "/", route) for route in self.routes if route.prefix)

    def find(self, path: str, params: dict[str, str] | None = None) -> Route | None:
        """The route of ``path``: an exact one first (``/v1/keys/verify`` before ``/v1/keys/{id}``), then
        a templated one (its parameters put in ``params``), then a prefix route."""
        route = self._exact.get(path)
        if route is not None and not route.template:
            return route
        for pattern, candidate in self._templates:
            matched = pattern.match(path)
            if matched is not None:
                if params is not None:
                    params.update(matched.groupdict())
                return candidate
        for prefix, candidate in self._prefixes:
            if path.startswith(prefix):
                return candidate
        return None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(route.label for route in self.routes))
