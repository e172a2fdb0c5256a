"""``POST /v1/keys/verify``: a service asks whether a key is valid (every answer a 200 with a code)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from storage import VerifyCode, Via

from ..wsgi import HttpError, read_body, respond
from .routes import Route
from .schema import EXAMPLE_KEY, EXAMPLE_KEY_ID, KEY_ID, SLOW_BODY, TIME, UNAVAILABLE, error, ref
from .verified import verified

if TYPE_CHECKING:
    from .app import KeyApiApp


class VerifyRequest(BaseModel):
    """The body of ``POST /v1/keys/verify`` (other fields are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"examples": [{"key": EXAMPLE_KEY}]})
    key: str


NOT_JSON = 'the body must be JSON like {"key": "apk_..."}'
NOT_A_KEY = 'the body must be a JSON object with a string "key"'


def verify(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    raw = read_body(environ)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, NOT_JSON) from None
    try:
        request = VerifyRequest.model_validate(body)
    except ValidationError:
        raise HttpError(400, NOT_A_KEY) from None
    result = app.store.keys.verify(request.key, via=Via.VERIFY)
    verified("verify", result)
    return respond(start_response, 200, result.to_dict())


def _verify_result(code: VerifyCode, required: tuple[str, ...], description: str) -> dict[str, Any]:
    properties: dict[str, Any] = {"valid": {"const": code is VerifyCode.VALID}, "code": {"const": code.value}}
    for name in required:
        properties[name] = {"key_id": KEY_ID, "expires_at": TIME, "name": {"type": "string"},
                            "owner": {"type": "string"}}[name]
    return {"type": "object", "description": description, "required": ["valid", "code", *required],
            "properties": properties}


SCHEMAS = {
    "VerifyCode": {"type": "string", "enum": [code.value for code in VerifyCode],
                   "description": "The outcome of a verification."},
    "VerifyResult": {"type": "object", "required": ["valid", "code"],
                     "properties": {"valid": {"type": "boolean"}, "code": ref("VerifyCode")},
                     "oneOf": [
                         _verify_result(VerifyCode.VALID, ("key_id", "expires_at", "name", "owner"), "Accept it."),
                         _verify_result(VerifyCode.REVOKED, ("key_id",), "It was ours and has been revoked: refuse, "
                                                                          "and treat the caller as suspicious."),
                         _verify_result(VerifyCode.EXPIRED, ("key_id", "expires_at"), "Its lifetime is over."),
                         _verify_result(VerifyCode.NOT_FOUND, (), "Well formed, but not a key we issued."),
                         _verify_result(VerifyCode.MALFORMED, (), "Not one of our keys (wrong shape or checksum)."),
                     ]},
}
MODELS = (VerifyRequest,)

VERIFY = {
    "operationId": "verifyKey",
    "tags": ["key API"],
    "summary": "Verify a key",
    "description": "Every verification answers 200 with `valid` and `code`. `key_id` for `VALID`, `REVOKED` and "
                   "`EXPIRED`; `expires_at` for `VALID` and `EXPIRED`; `name` and `owner` only for `VALID`. A "
                   "`MALFORMED` key (wrong shape or checksum) never reaches the database.",
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": ref("VerifyRequest"), "example": {"key": EXAMPLE_KEY}}}},
    "responses": {
        "200": {"description": "The verification.", "content": {"application/json": {
            "schema": ref("VerifyResult"),
            "examples": {
                "valid": {"value": {"valid": True, "code": "VALID", "key_id": EXAMPLE_KEY_ID, "expires_at": None,
                                    "name": "billing-api", "owner": "payments"}},
                "revoked": {"value": {"valid": False, "code": "REVOKED", "key_id": EXAMPLE_KEY_ID}},
                "malformed": {"value": {"valid": False, "code": "MALFORMED"}},
            }}}},
        "400": error("The body is not JSON with a string `key`, or could not be read.", NOT_A_KEY),
        "408": SLOW_BODY,
        "413": error("The body is larger than 64 KiB.", "request body larger than 65536 bytes"),
        "503": UNAVAILABLE,
    },
}

ROUTES = [Route("/v1/keys/verify", ("POST",), verify, "verify", operations={"post": VERIFY})]
