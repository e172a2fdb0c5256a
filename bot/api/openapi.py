"""The OpenAPI 3.1 description of the key API, served at ``GET /openapi.json``: built from the
route table (``bot.api.table.ROUTES``: each route's operations, by method) and the route families'
schemas, pydantic models and security schemes. Kept true by ``tests/test_openapi.py``: every route
of the table is in it (or says why not), it validates, and schemathesis, run against the real
server with all its checks, finds nothing the server answers that is not written here.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .routes import RouteTable
from .schema import model_schema


def families(table: RouteTable) -> list:
    """The modules the table's routes come from, in order: each may declare ``SCHEMAS``, ``MODELS``
    (pydantic models) and ``SECURITY`` for the document, beside its routes (nothing to register twice)."""
    return list(dict.fromkeys(sys.modules[route.handler.__module__] for route in table.routes))


def build(table: RouteTable) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        if route.undocumented:
            continue
        paths[route.path] = dict(route.operations)
        if route.prefix:
            paths[route.path + "/{path}"] = dict(route.prefix_operations)
    schemas: dict[str, Any] = {}
    security: dict[str, Any] = {}
    for family in families(table):
        schemas.update(getattr(family, "SCHEMAS", {}))
        for model in getattr(family, "MODELS", ()):
            schemas[model.__name__] = model_schema(model)
        security.update(getattr(family, "SECURITY", {}))
    schemas.update({
        "Unavailable": {"type": "object", "required": ["code", "error"], "properties": {
            "code": {"const": "UNAVAILABLE"}, "error": {"type": "string"}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    })
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "apikeys-bot key API",
            "version": "1",
            "description": "Verify keys, forward auth for reverse proxies, leak reports from GitHub, the management "
                           "API (keys listed, created, revoked and rotated with an admin token) and the routes "
                           "operators need. Errors are JSON `{\"error\": \"...\"}`, and RFC 9457 problem details "
                           "(`application/problem+json`) on the management routes; a request the server cannot "
                           "parse is answered 400 by the HTTP server itself.",
        },
        "tags": [{"name": "key API"}, {"name": "management"}, {"name": "leaks"}, {"name": "operations"}],
        "paths": paths,
        "components": {"securitySchemes": security, "schemas": schemas},
    }


def document_bytes(table: RouteTable) -> bytes:
    return json.dumps(build(table), separators=(",", ":")).encode("utf-8")
