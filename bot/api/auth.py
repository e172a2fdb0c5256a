"""``/v1/auth`` (and ``/v1/auth/<anything>``): forward auth for reverse proxies, any method.

The key is taken from ``Authorization: Bearer <key>`` or ``X-API-Key`` only (Bearer first): a key
under another scheme (``Basic``) is not accepted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from storage import VerifyCode, Via

from .. import metrics
from ..logs import fields
from ..wsgi import respond
from .routes import ANY_METHOD, Route
from .schema import EXAMPLE_KEY_ID, KEY_ID, UNAVAILABLE, ref
from .verified import verified

if TYPE_CHECKING:
    from .app import KeyApiApp

log = logging.getLogger("apikeys.http")
UNAUTHORIZED = [("WWW-Authenticate", "Bearer")]
NO_KEY = "no API key: send Authorization: Bearer <key> or X-API-Key"


def presented_key(environ: dict) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth:
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    api_key = environ.get("HTTP_X_API_KEY", "").strip()
    return api_key or None


def auth(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    presented = presented_key(environ)
    if presented is None:
        log.info(fields(event="auth", code="MALFORMED", outcome="no_key"))
        metrics.verified("auth", VerifyCode.MALFORMED)
        return respond(start_response, 401, {"code": VerifyCode.MALFORMED.value, "error": NO_KEY}, UNAUTHORIZED)
    result = app.store.keys.verify(presented, via=Via.AUTH)
    verified("auth", result)
    if result.valid:
        return respond(start_response, 204, None, [("X-Key-Id", result.key_id), ("X-Key-Owner", result.owner)])
    body = {"code": result.code.value}
    if result.key_id:
        body["key_id"] = result.key_id
    return respond(start_response, 401, body, UNAUTHORIZED)


AUTH_HEADERS = {
    "X-Key-Id": {"description": "The key's id.", "required": True, "schema": KEY_ID},
    "X-Key-Owner": {"description": "The key's owner.", "required": True, "schema": {"type": "string", "minLength": 1}},
}
CHALLENGE = {"WWW-Authenticate": {"description": "Always `Bearer`.", "required": True,
                                  "schema": {"type": "string", "const": "Bearer"}}}
# Any method: proxies forward theirs. HEAD is GET's (OpenAPI documents GET; a HEAD is answered as it).
DOCUMENTED_METHODS = tuple(m.lower() for m in ANY_METHOD if m != "HEAD")


def _operation(method: str, with_path: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"auth{'Path' if with_path else ''}{method.capitalize()}",
        "tags": ["key API"],
        "summary": "Forward auth for reverse proxies" + (" (original path appended)" if with_path else ""),
        "description": (
            "The key goes in `Authorization: Bearer <key>` or `X-API-Key: <key>` (Bearer first). Any method is "
            "accepted, and `/v1/auth/<anything>`, for proxies (Envoy) that forward the original method and path. "
            "A request body is ignored."),
        "security": [{"bearer": []}, {"apiKey": []}],
        "responses": {
            "204": {"description": "The key is valid.", "headers": AUTH_HEADERS},
            "401": {
                "description": "No key, or a key that is not valid (`MALFORMED` when none was sent).",
                "headers": CHALLENGE,
                "content": {"application/json": {
                    "schema": ref("AuthFailure"),
                    "examples": {
                        "revoked": {"value": {"code": "REVOKED", "key_id": EXAMPLE_KEY_ID}},
                        "none": {"value": {"code": "MALFORMED", "error": NO_KEY}},
                    },
                }},
            },
            "503": UNAVAILABLE,
        },
    }
    if with_path:
        operation["parameters"] = [{"name": "path", "in": "path", "required": True,
                                    "description": "The original request's path (ignored).",
                                    "schema": {"type": "string"}}]
    return operation


SCHEMAS = {
    "AuthFailure": {"type": "object", "required": ["code"], "properties": {
        "code": {"allOf": [ref("VerifyCode")], "not": {"const": "VALID"}},
        "key_id": KEY_ID, "error": {"type": "string"}}},
}
SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer apk_…`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}

ROUTES = [Route("/v1/auth", None, auth, "auth", prefix=True,
                operations={m: _operation(m, False) for m in DOCUMENTED_METHODS},
                prefix_operations={m: _operation(m, True) for m in DOCUMENTED_METHODS})]
