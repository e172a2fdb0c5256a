"""The management API: keys listed, read, created, revoked and rotated by automation (CI, Terraform,
scripts) with an admin token (``Authorization: Bearer apkt_…``, from ``apikeys tokens create``).

Every change goes through the storage services Slack and the command line use (one rule for names,
owners, reasons and masking; the change and its audit entry in one transaction; the audit channel
and the owners' channels told), with the actor ``token:<name>`` and ``via`` ``api``. Writes take an
``Idempotency-Key`` (the first answer is kept in the same transaction as the change, so a retry
answers it again and changes nothing; a secret is never kept, so it is answered as already shown)
and are limited to 60 a minute per token, counted in the database so that replicas share the count.
Errors are RFC 9457 problem details (``bot.api.problems``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from storage import InvalidInput, KeyNotFound, Via
from storage.errors import KeyStateConflict
from storage.keys import check_owner, decode_cursor, key_to_dict
from storage.rotation import DEFAULT_GRACE, GRACES, parse_grace
from storage.timeutil import iso, parse_duration, utcnow
from storage.tokens import (
    SCOPES,
    WRITES_PER_MINUTE,
    Caller,
    IdempotencyMismatch,
    RateLimited,
    TokenDenied,
    check_idempotency_key,
)
from storage.validation import FORBIDDEN_BMP

from ..logs import fields
from ..wsgi import read_body, respond
from .problems import PROBLEM_SCHEMA, Problem, problem
from .routes import PATH_PARAMS, Route
from .schema import EXAMPLE_KEY, EXAMPLE_KEY_ID, KEY_ID, RETRY_AFTER, TIME, ref

if TYPE_CHECKING:
    from .app import KeyApiApp

log = logging.getLogger("apikeys.manage")

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
REALM = 'Bearer realm="apikeys"'
REPLAYED = "Idempotent-Replayed"
SHOWN_ONCE = "already shown: the first answer to this Idempotency-Key carried it, and a secret is never kept"


# -- request bodies -------------------------------------------------------------------------
# What the API takes for a lifetime and a grace: the JSON Schema says exactly which strings, so that a
# request the document calls valid is one the server accepts.
LIFETIME = r"^(([1-9][0-9]{0,2}|[12][0-9]{3}|3[0-5][0-9]{2}|36[0-5][0-9]|3660)d|[1-9][0-9]{0,3}h|[1-9][0-9]{0,5}m)$"
MAX_LIFETIME_SECONDS = 3660 * 86400
GRACE = r"^(now|1 hour|24 hours|7 days|([1-9]|[12][0-9]|30)d|([1-9][0-9]?|[1-6][0-9]{2}|7[01][0-9]|720)h|[1-9][0-9]{0,3}m)$"
MAX_GRACE_SECONDS = 30 * 86400
NAME = rf"^[^\s{FORBIDDEN_BMP}]([^{FORBIDDEN_BMP}]{{0,78}}[^\s{FORBIDDEN_BMP}])?$"
_NOTE_FORBIDDEN = FORBIDDEN_BMP.replace(r"\x00-\x1f", r"\x00-\x09\x0b-\x1f", 1)  # a note may break lines
NOTE = rf"^[^{_NOTE_FORBIDDEN}]*$"
OWNER = r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,99}$"


# What a field that takes one of several shapes wants, said once (pydantic would list each shape's complaint).
FIELD_HELP = {
    "expires_in": "a lifetime like 90d, 12h or 30m (at most 3660d), or whole seconds from 1 to 316224000",
    "grace": "now, 1 hour, 24 hours, 7 days, a duration like 90m, 12h or 2d (at most 30d), or whole seconds from 0 "
             "to 2592000",
    "note": "text of at most 500 characters, without control characters",
    "name": "1-80 characters without control characters, not starting or ending with a space",
}


def _whole(value: Any) -> Any:
    """JSON's integers: 60 and 60.0 alike, never true or false."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number of seconds")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Lifetime = Annotated[str, Field(pattern=LIFETIME)]
LifetimeSeconds = Annotated[int, Field(ge=1, le=MAX_LIFETIME_SECONDS), BeforeValidator(_whole)]
Grace = Annotated[str, Field(pattern=GRACE)]
GraceSeconds = Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS), BeforeValidator(_whole)]


class CreateKey(BaseModel):
    """``POST /v1/keys``."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={
        "examples": [{"name": "billing-api", "owner": "payments", "expires_in": "90d"}]})
    name: Annotated[str, Field(pattern=NAME, description="1-80 characters; never a key.")]
    owner: Annotated[str, Field(pattern=OWNER, description="The team or person: letters, digits and . _ @ + - "
                                                           "(like payments-team).")]
    expires_in: Lifetime | LifetimeSeconds | None = Field(
        default=None, description="A lifetime: `90d`, `12h`, `30m`, or seconds; at most 3660 days. Absent: the key "
                                  "never expires.")


class RevokeKey(BaseModel):
    """``POST /v1/keys/{id}/revoke`` (the body may be empty)."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={
        "examples": [{"reason": "compromised", "note": "found in a public gist"}]})
    reason: Literal["compromised", "rotation", "decommissioned", "other"] | None = None
    note: Annotated[str, Field(max_length=500, pattern=NOTE)] | None = Field(
        default=None, description="At most 500 characters; a key in it is masked.")


class RotateKey(BaseModel):
    """``POST /v1/keys/{id}/rotate`` (the body may be empty: a grace of 24 hours)."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [{"grace": "1 hour"}]})
    grace: Grace | GraceSeconds | None = Field(
        default=None, description=(
            f"How long the old key keeps working: {', '.join(GRACES)}, a duration (`90m`, `12h`, `2d`) or seconds; at "
            f"most 30 days. Absent: {DEFAULT_GRACE}. `now` (or 0) revokes it at once (reason rotation)."))


# -- authentication and scopes ----------------------------------------------------------------
def _caller(app: KeyApiApp, environ: dict, scope: str) -> Caller:
    header = environ.get("HTTP_AUTHORIZATION") or ""
    scheme, _, presented = header.strip().partition(" ")
    if not header:
        presented = None
    elif scheme.lower() != "bearer":
        raise Problem(401, "use Authorization: Bearer apkt_… (an admin token)", code="token_missing",
                      headers=[("WWW-Authenticate", REALM)])
    try:
        caller = app.store.tokens.authenticate(presented.strip() if presented else presented)
    except TokenDenied as denied:
        log.info(fields(event="manage.denied", path=environ.get("PATH_INFO"), reason=denied.reason))
        challenge = REALM if denied.reason == "missing" else f'{REALM}, error="invalid_token"'
        # A row the log does not vouch for answers as unknown: the caller learns nothing of the table.
        code = "token_unknown" if denied.reason == "unvouched" else f"token_{denied.reason}"
        raise Problem(401, str(denied), code=code, headers=[("WWW-Authenticate", challenge)]) from None
    if scope not in caller.scopes:
        raise Problem(403, f"token {caller.name} lacks the scope {scope} (it has {', '.join(sorted(caller.scopes))})",
                      code="scope_missing", required_scope=scope,
                      headers=[("WWW-Authenticate", f'{REALM}, error="insufficient_scope", scope="{scope}"')])
    return caller


def _key_id(environ: dict) -> str:
    return environ[PATH_PARAMS]["id"]


# -- bodies, answers ---------------------------------------------------------------------------
def _json_body(environ: dict, model: type[BaseModel], *, optional: bool) -> tuple[BaseModel, Any]:
    raw = read_body(environ)
    if not raw.strip() and optional:
        parsed: Any = {}
    else:
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Problem(400, "the body must be a JSON object", code="not_json") from None
    if not isinstance(parsed, dict):
        raise Problem(400, "the body must be a JSON object", code="not_json")
    try:
        return model.model_validate(parsed), parsed
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors(include_url=False, include_input=False):
            field = str(error["loc"][0]) if error["loc"] else "body"
            if field not in errors:
                errors[field] = FIELD_HELP.get(field, error["msg"]) if len(error["loc"]) > 1 else error["msg"]
        listed = [{"field": field, "message": message} for field, message in errors.items()]
        raise Problem(422, f"{listed[0]['field']}: {listed[0]['message']}", errors=listed) from None


def key_out(key, now: datetime | None = None) -> dict[str, Any]:
    """A key as the management API shows it: never the secret, never its digest."""
    return {**key_to_dict(key, now), "revoke_note": key.revoke_note, "rotated_to": key.rotated_to,
            "rotated_at": iso(key.rotated_at)}


def _duration(value: str | int | None, what: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, int):
        if value <= 0:
            raise InvalidInput(f"{what} in seconds must be more than 0")
        return timedelta(seconds=value)
    return parse_duration(value)


def _grace(value: str | int | None) -> timedelta:
    if value is None:
        return GRACES[DEFAULT_GRACE]
    if isinstance(value, int):
        return parse_grace(f"{value}s") if value > 0 else GRACES["now"]
    return parse_grace(value)


def _request_hash(environ: dict, parsed: Any) -> str:
    material = json.dumps([environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), parsed], sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class _Raced(Exception):
    """Another request with the same Idempotency-Key committed first."""


def _write(app: KeyApiApp, environ: dict, start_response, caller: Caller, parsed: Any,
           change: Callable[[], tuple[int, dict[str, Any]]]) -> list[bytes]:
    """Run ``change`` (which raises a ``Problem`` to refuse) in one transaction with the token's write
    budget and, with an ``Idempotency-Key``, the first answer it gives."""
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is not None:
        try:
            key = check_idempotency_key(key)
        except InvalidInput as exc:
            raise Problem(400, str(exc), code="idempotency_key_invalid") from None
    request_hash = _request_hash(environ, parsed)
    tokens = app.store.tokens
    for attempt in (1, 2):
        try:
            with app.store.db.transaction() as session:
                if key is not None:
                    tokens.hold(session, caller.id, key)
                    remembered = tokens.remembered(session, caller.id, key, request_hash)
                    if remembered is not None:
                        return respond(start_response, remembered.status, remembered.body, [(REPLAYED, "true")])
                tokens.spend_write(session, caller.id)
                status, body = change()
                if key is not None:
                    kept = {**body, "key": None, "key_shown": SHOWN_ONCE} if "key" in body else body
                    try:
                        tokens.remember(session, caller.id, key, request_hash, status, kept)
                    except IntegrityError:
                        raise _Raced() from None
            return respond(start_response, status, body)
        except _Raced:
            if attempt == 2:
                raise Problem(409, "another request with this Idempotency-Key is being answered; retry it",
                              code="idempotency_key_in_use") from None
        except IdempotencyMismatch as exc:
            raise Problem(422, str(exc), code="idempotency_key_reused") from None
        except RateLimited as exc:
            raise Problem(429, str(exc), code="rate_limited", headers=[("Retry-After", str(exc.retry_after))]) from None
        except KeyNotFound:
            raise Problem(404, f"no key {_key_id(environ)}", code="key_not_found") from None
        except KeyStateConflict as exc:
            raise Problem(409, str(exc), code="key_state") from None
        except InvalidInput as exc:
            raise Problem(422, str(exc)) from None
    raise AssertionError("unreachable")


# -- the routes -------------------------------------------------------------------------------
CURSOR = r"^[0-9]{1,16}\.key_[0-9A-Za-z]{17}$"  # microseconds since 1970 and a key id: every such value pages
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _cursor_out(cursor: str | None) -> str | None:
    """The store's cursor as the API shows it (``<µs since 1970>.<key id>``): pass it back as it is."""
    if cursor is None:
        return None
    at, key_id = decode_cursor(cursor)
    return f"{(at - _EPOCH) // timedelta(microseconds=1)}.{key_id}"


def _cursor_in(text: str) -> str:
    if not re.match(CURSOR, text):
        raise Problem(400, "invalid cursor: pass next_cursor from the previous page as it is", code="cursor_invalid")
    micros, key_id = text.split(".", 1)
    at = _EPOCH + timedelta(microseconds=int(micros))
    return f"{at.strftime('%Y%m%d%H%M%S%f')}.{key_id}"


def _query(environ: dict) -> dict[str, str]:
    try:
        parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=20)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "the query string cannot be read", code="bad_query") from None
    return {name: values[-1] for name, values in parsed.items()}


def keys_collection(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    if environ.get("REQUEST_METHOD", "GET").upper() == "POST":
        return create_key(app, environ, start_response)
    _caller(app, environ, "keys:read")
    query = _query(environ)
    limit_text = query.get("limit", str(DEFAULT_LIMIT))
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise Problem(400, f"limit is a number from 1 to {MAX_LIMIT}", code="limit_invalid")
    owner = query.get("owner")
    try:
        if owner is not None:
            check_owner(owner)
        page = app.store.keys.list_keys(status=query.get("status", "all"), owner=owner, limit=int(limit_text),
                                        after=_cursor_in(query["cursor"]) if "cursor" in query else None,
                                        with_prev=False)
    except InvalidInput as exc:
        raise Problem(400, str(exc), code="query_invalid") from None
    now = utcnow()
    return respond(start_response, 200, {"items": [key_out(k, now) for k in page.items],
                                         "next_cursor": _cursor_out(page.next_cursor)})


def create_key(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    caller = _caller(app, environ, "keys:write")
    request, parsed = _json_body(environ, CreateKey, optional=False)

    def change() -> tuple[int, dict[str, Any]]:
        created = app.store.keys.create(name=request.name, owner=request.owner, actor=caller.actor,
                                        expires_in=_duration(request.expires_in, "expires_in"),
                                        context={"via": Via.API.value, "token_id": caller.id})[0]
        return 201, {**key_out(created.key), "key": created.secret}

    return _write(app, environ, start_response, caller, parsed, change)


def get_key(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    _caller(app, environ, "keys:read")
    try:
        key = app.store.keys.get(_key_id(environ))
    except KeyNotFound:
        raise Problem(404, f"no key {_key_id(environ)}", code="key_not_found") from None
    return respond(start_response, 200, key_out(key))


def revoke_key(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    caller = _caller(app, environ, "keys:revoke")
    request, parsed = _json_body(environ, RevokeKey, optional=True)

    def change() -> tuple[int, dict[str, Any]]:
        outcome = app.store.keys.revoke(_key_id(environ), actor=caller.actor, via=Via.API, reason=request.reason,
                                        note=request.note, context={"token_id": caller.id})
        if not outcome.revoked_now:
            raise Problem(409, f"{outcome.key.id} was already revoked (by {outcome.key.revoked_by})",
                          code="already_revoked", key=key_out(outcome.key))
        return 200, key_out(outcome.key)

    return _write(app, environ, start_response, caller, parsed, change)


def rotate_key(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    caller = _caller(app, environ, "keys:write")
    request, parsed = _json_body(environ, RotateKey, optional=True)

    def change() -> tuple[int, dict[str, Any]]:
        rotated = app.store.keys.rotate(_key_id(environ), actor=caller.actor, via=Via.API, grace=_grace(request.grace),
                                        context={"token_id": caller.id})
        return 201, {**key_out(rotated.new.key), "key": rotated.new.secret, "replaces": key_out(rotated.old)}

    return _write(app, environ, start_response, caller, parsed, change)


# -- the OpenAPI operations -------------------------------------------------------------------
SECURITY = {"adminToken": {"type": "http", "scheme": "bearer",
                           "description": "`Authorization: Bearer apkt_…`: an admin token from `apikeys tokens "
                                          f"create` with the scopes an operation names ({', '.join(SCOPES)})."}}

_KEY_PROPERTIES = {
    "id": KEY_ID, "name": {"type": "string"}, "owner": {"type": "string"}, "prefix": {"type": "string"},
    "masked": {"type": "string", "examples": ["apk_…9Qf3"]},
    "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
    "created_at": TIME, "created_by": {"type": "string"}, "expires_at": TIME, "last_used_at": TIME,
    "revoked_at": TIME, "revoked_by": {"type": ["string", "null"]}, "revoke_reason": {"type": ["string", "null"]},
    "revoke_note": {"type": ["string", "null"]}, "rotated_to": {"type": ["string", "null"]}, "rotated_at": TIME,
}
_EXAMPLE = {"id": EXAMPLE_KEY_ID, "name": "billing-api", "owner": "payments", "prefix": "apk",
            "masked": "apk_…0yQV", "status": "active", "created_at": "2026-12-07T10:00:00Z",
            "created_by": "token:terraform", "expires_at": None, "last_used_at": None, "revoked_at": None,
            "revoked_by": None, "revoke_reason": None, "revoke_note": None, "rotated_to": None, "rotated_at": None}
SCHEMAS = {
    "Problem": PROBLEM_SCHEMA,
    "Key": {"type": "object", "required": list(_KEY_PROPERTIES), "properties": _KEY_PROPERTIES,
            "description": "A key: never its secret."},
    "KeyPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": ref("Key")},
        "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the "
                                                                   "last."}}},
    "NewKey": {"type": "object", "required": [*_KEY_PROPERTIES, "key"], "properties": {
        **_KEY_PROPERTIES,
        "key": {"type": ["string", "null"], "description": "The secret: in the first answer only (a replay of the "
                                                          "same Idempotency-Key answers null and `key_shown`)."},
        "key_shown": {"type": "string"},
        "replaces": ref("Key")}},
}
MODELS = (CreateKey, RevokeKey, RotateKey)

_AUTH = [{"adminToken": []}]
_KEY_PARAM = {"name": "id", "in": "path", "required": True, "schema": KEY_ID}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "description": "The same key with the same body within 24 hours answers the first answer again "
                               "(header `Idempotent-Replayed: true`) and changes nothing; another body 422.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"}}
_JSON = "application/json"


_REPLAYED = {REPLAYED: {"schema": {"type": "string", "const": "true"},
                        "description": "Present when this is the first answer to the request's Idempotency-Key, "
                                       "given again."}}


def _ok(description: str, schema: str, example: dict | None = None, *, replayable: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": ref(schema)}
    if example is not None:
        content["example"] = example
    answer: dict[str, Any] = {"description": description, "content": {_JSON: content}}
    if replayable:
        answer["headers"] = _REPLAYED
    return answer


def _errors(*statuses: int, scope: str) -> dict[str, Any]:
    catalogue = {
        400: problem("The body is not a JSON object, or a query value or header cannot be used.", 400,
                     "the body must be a JSON object", "not_json"),
        401: problem("No admin token, or one that is unknown, revoked or expired (an `apk_` key is not one).", 401,
                     "unknown token", "token_unknown", headers={"WWW-Authenticate": {"schema": {"type": "string"}}}),
        403: problem(f"The token lacks the scope `{scope}`.", 403, f"token ci lacks the scope {scope}", "scope_missing",
                     headers={"WWW-Authenticate": {"schema": {"type": "string"}}}),
        404: problem("No such key.", 404, f"no key {EXAMPLE_KEY_ID}", "key_not_found"),
        409: problem("The key's state forbids it (already revoked; rotated or not active).", 409,
                     f"{EXAMPLE_KEY_ID} was already revoked (by U0ADMIN)", "already_revoked"),
        413: problem("The body is larger than 64 KiB.", 413, "request body larger than 65536 bytes", "too_large"),
        422: problem("A field is missing or invalid, or the Idempotency-Key was used for another request.", 422,
                     "name: Field required", "invalid"),
        429: problem(f"More than {WRITES_PER_MINUTE} writes this minute with this token.", 429,
                     f"at most {WRITES_PER_MINUTE} writes a minute per token; try again in 12 s", "rate_limited",
                     headers=RETRY_AFTER),
        503: problem("The key store cannot be reached; try again.", 503, "the key store is unavailable; try again",
                     "unavailable", headers=RETRY_AFTER),
    }
    return {str(status): catalogue[status] for status in statuses}


def _body(model: str, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {_JSON: {"schema": ref(model)}}}


LIST = {
    "operationId": "listKeys", "tags": ["management"], "summary": "List keys", "security": _AUTH,
    "description": "Newest first, paged by cursor. Scope `keys:read`.",
    "parameters": [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["all", "active", "revoked", "expired"],
                                                    "default": "all"}},
        {"name": "owner", "in": "query", "schema": {"type": "string", "pattern": OWNER}},
        {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": CURSOR},
         "description": "`next_cursor` of the previous page, as it is."},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                   "default": DEFAULT_LIMIT}},
    ],
    "responses": {"200": _ok("A page of keys.", "KeyPage"), **_errors(400, 401, 403, 503, scope="keys:read")},
}
CREATE = {
    "operationId": "createKey", "tags": ["management"], "summary": "Create a key", "security": _AUTH,
    "description": "Scope `keys:write`. The answer carries the secret once.",
    "parameters": [_IDEMPOTENCY], "requestBody": _body("CreateKey", True),
    "responses": {"201": _ok("The new key and its secret.", "NewKey", {**_EXAMPLE, "key": EXAMPLE_KEY}, replayable=True),
                  **_errors(400, 401, 403, 413, 422, 429, 503, scope="keys:write")},
}
GET = {
    "operationId": "getKey", "tags": ["management"], "summary": "One key", "security": _AUTH,
    "description": "Scope `keys:read`.", "parameters": [_KEY_PARAM],
    "responses": {"200": _ok("The key.", "Key", _EXAMPLE), **_errors(401, 403, 404, 503, scope="keys:read")},
}
REVOKE = {
    "operationId": "revokeKey", "tags": ["management"], "summary": "Revoke a key", "security": _AUTH,
    "description": "Scope `keys:revoke`. At once, on every replica, for good.",
    "parameters": [_KEY_PARAM, _IDEMPOTENCY], "requestBody": _body("RevokeKey", False),
    "responses": {"200": _ok("The key, revoked.", "Key", replayable=True),
                  **_errors(400, 401, 403, 404, 409, 413, 422, 429, 503, scope="keys:revoke")},
}
ROTATE = {
    "operationId": "rotateKey", "tags": ["management"], "summary": "Rotate a key", "security": _AUTH,
    "description": "Scope `keys:write`. A replacement with the same name, owner and lifetime; the old key keeps "
                   "working for the grace period.",
    "parameters": [_KEY_PARAM, _IDEMPOTENCY], "requestBody": _body("RotateKey", False),
    "responses": {"201": _ok("The replacement and its secret, and the old key as it is now.", "NewKey",
                             replayable=True),
                  **_errors(400, 401, 403, 404, 409, 413, 422, 429, 503, scope="keys:write")},
}

ROUTES = [
    Route("/v1/keys", ("GET", "POST"), keys_collection, "keys", operations={"get": LIST, "post": CREATE},
          problems=True),
    Route("/v1/keys/{id}", ("GET",), get_key, "key", operations={"get": GET}, problems=True),
    Route("/v1/keys/{id}/revoke", ("POST",), revoke_key, "key_revoke", operations={"post": REVOKE}, problems=True),
    Route("/v1/keys/{id}/rotate", ("POST",), rotate_key, "key_rotate", operations={"post": ROTATE}, problems=True),
]
