"""The OpenAPI 3.1 description of the key API, served at ``GET /openapi.json``.

Built once at import (``DOCUMENT`` is the bytes the route sends). Kept true by
``tests/test_openapi.py``: it validates (openapi-spec-validator) and schemathesis, run against the
real server with all its checks, finds nothing the server answers that is not written here.
"""

from __future__ import annotations

import json
from typing import Any

from storage import VerifyCode

EXAMPLE_KEY = "apk_6Ra5LPT6Ui8CrvRMaHXJVY0yQVjP"
EXAMPLE_KEY_ID = "key_0uYlq5eoKkRzSWB2p"
KEY_ID = {"type": "string", "pattern": "^key_[0-9A-Za-z]{17}$", "examples": [EXAMPLE_KEY_ID]}
TIME = {"type": ["string", "null"], "format": "date-time", "examples": ["2027-03-01T00:00:00Z"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, example: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error"), "example": {"error": example}}}}


UNAVAILABLE = {"description": "The key store cannot be read; try again (nothing was decided: never a pass). "
                              "Retry-After says when.",
               "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
               "content": {"application/json": {"schema": _ref("Unavailable"), "example": {
                   "code": "UNAVAILABLE", "error": "the key store is unavailable; try again"}}}}


SLOW_BODY = _error("The body took longer than APIKEYS_BODY_TIMEOUT (10 s) to arrive; the connection is closed.",
                   "the request body took longer than 10 s to arrive")


def _verify_result(code: VerifyCode, required: tuple[str, ...], description: str) -> dict[str, Any]:
    properties: dict[str, Any] = {"valid": {"const": code is VerifyCode.VALID}, "code": {"const": code.value}}
    for name in required:
        properties[name] = {"key_id": KEY_ID, "expires_at": TIME, "name": {"type": "string"},
                            "owner": {"type": "string"}}[name]
    return {"type": "object", "description": description, "required": ["valid", "code", *required],
            "properties": properties}


AUTH_HEADERS = {
    "X-Key-Id": {"description": "The key's id.", "required": True, "schema": KEY_ID},
    "X-Key-Owner": {"description": "The key's owner.", "required": True, "schema": {"type": "string", "minLength": 1}},
}
CHALLENGE = {"WWW-Authenticate": {"description": "Always `Bearer`.", "required": True,
                                  "schema": {"type": "string", "const": "Bearer"}}}


def _auth_operation(method: str, with_path: bool) -> dict[str, Any]:
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
                    "schema": _ref("AuthFailure"),
                    "examples": {
                        "revoked": {"value": {"code": "REVOKED", "key_id": EXAMPLE_KEY_ID}},
                        "none": {"value": {"code": "MALFORMED",
                                           "error": "no API key: send Authorization: Bearer <key> or X-API-Key"}},
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


AUTH_METHODS = ("get", "post", "put", "patch", "delete", "options", "trace")  # any method: proxies forward theirs


def build() -> dict[str, Any]:
    verify = {
        "operationId": "verifyKey",
        "tags": ["key API"],
        "summary": "Verify a key",
        "description": "Every verification answers 200 with `valid` and `code`. `key_id` for `VALID`, `REVOKED` and "
                       "`EXPIRED`; `expires_at` for `VALID` and `EXPIRED`; `name` and `owner` only for `VALID`. A "
                       "`MALFORMED` key (wrong shape or checksum) never reaches the database.",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("VerifyRequest"), "example": {"key": EXAMPLE_KEY}}}},
        "responses": {
            "200": {"description": "The verification.", "content": {"application/json": {
                "schema": _ref("VerifyResult"),
                "examples": {
                    "valid": {"value": {"valid": True, "code": "VALID", "key_id": EXAMPLE_KEY_ID, "expires_at": None,
                                        "name": "billing-api", "owner": "payments"}},
                    "revoked": {"value": {"valid": False, "code": "REVOKED", "key_id": EXAMPLE_KEY_ID}},
                    "malformed": {"value": {"valid": False, "code": "MALFORMED"}},
                }}}},
            "400": _error("The body is not JSON with a string `key`, or could not be read.",
                          'the body must be a JSON object with a string "key"'),
            "408": SLOW_BODY,
            "413": _error("The body is larger than 64 KiB.", "request body larger than 65536 bytes"),
            "503": UNAVAILABLE,
        },
    }
    health = {
        "operationId": "health",
        "tags": ["operations"],
        "summary": "Health for load balancers",
        "responses": {
            "200": {"description": "The key store answers.", "content": {"application/json": {
                "schema": _ref("Health"), "example": {"status": "ok", "database": "ok"}}}},
            "503": {"description": "The key store does not answer, or cannot be written (revocations would "
                                   "fail): `database` says which.", "content": {"application/json": {
                "schema": _ref("Health"), "example": {"status": "unavailable", "database": "unreachable"}}}},
        },
    }
    metrics = {
        "operationId": "metrics",
        "tags": ["operations"],
        "summary": "Prometheus metrics",
        "description": "Prometheus text format, every worker's counts added up. With `METRICS_PORT` set it is served on "
                       "that port only, and this route answers 404.",
        "responses": {
            "200": {"description": "The metrics.", "content": {"text/plain": {
                "schema": {"type": "string"},
                "example": '# TYPE apikeys_verifications_total counter\n'
                           'apikeys_verifications_total{code="VALID",route="auth"} 12.0\n'}}},
            "404": _error("Served on METRICS_PORT instead.", "no route /metrics"),
        },
    }
    document = {
        "operationId": "openapi",
        "tags": ["operations"],
        "summary": "This document",
        "responses": {"200": {"description": "The OpenAPI 3.1 description of the key API.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }
    github = {
        "operationId": "githubSecretScanning",
        "tags": ["leaks"],
        "summary": "GitHub secret scanning partner alerts",
        "description": "GitHub reports keys found in public. Signed with `Github-Public-Key-Identifier` and "
                       "`Github-Public-Key-Signature` (ECDSA P-256, SHA-256, over the raw body). A valid key found in "
                       "public is revoked at once (`APIKEYS_PUBLIC_LEAK_ACTION=revoke`, the default) or only reported "
                       "(`alert`).",
        "security": [{"githubSignature": []}],
        "parameters": [
            {"name": "Github-Public-Key-Identifier", "in": "header", "required": True,
             "schema": {"type": "string"}, "description": "Which of GitHub's public keys (published at "
                                                          "`APIKEYS_GITHUB_KEYS_URL`) signed the body."},
        ],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "array", "items": _ref("GitHubLeak")},
            "example": [{"token": EXAMPLE_KEY, "type": "apikeys_api_key",
                         "url": "https://github.com/octo/repo/blob/abc/config.py", "source": "content"}]}}},
        "responses": {
            "200": {"description": "GitHub's feedback, one element per match in order, each token named by its "
                                   "SHA-256 (`true_positive`: a key we issued, active, revoked or expired).",
                    "content": {"application/json": {
                        "schema": {"type": "array", "items": _ref("GitHubFeedback")},
                        "example": [{"token_hash": "63b5609106f9d1c5e2f0b0c7a4c1a6e38f0c1d2b3a4e5f60718293a4b5c6d7e8",
                                     "token_type": "apikeys_api_key", "label": "true_positive"}]}}},
            "400": _error("Signed, but not a JSON array of matches; nothing changed.",
                          'the body must be a JSON array of {"token", "type", "url", "source"} objects'),
            "401": _error("A missing, unknown or wrong signature; nothing changed.",
                          "missing Github-Public-Key-Signature header: alerts must be signed by GitHub"),
            "408": SLOW_BODY,
            "413": _error("The body is larger than 1 MiB.", "request body larger than 1048576 bytes"),
            "503": {**_error("GitHub's public keys are still being fetched, could not be fetched to check the signature, "
                             "or the key store does not answer; GitHub retries (Retry-After says when).",
                             "GitHub's public keys could not be fetched to check the signature; try again"),
                    "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}},
        },
    }
    paths = {
        "/v1/keys/verify": {"post": verify},
        "/v1/auth": {method: _auth_operation(method, False) for method in AUTH_METHODS},
        "/v1/auth/{path}": {method: _auth_operation(method, True) for method in AUTH_METHODS},
        "/healthz": {"get": health},
        "/metrics": {"get": metrics},
        "/openapi.json": {"get": document},
        "/v1/secret-scanning/github": {"post": github},
    }
    verify_results = [
        _verify_result(VerifyCode.VALID, ("key_id", "expires_at", "name", "owner"), "Accept it."),
        _verify_result(VerifyCode.REVOKED, ("key_id",), "It was ours and has been revoked: refuse, and treat the caller "
                                                         "as suspicious."),
        _verify_result(VerifyCode.EXPIRED, ("key_id", "expires_at"), "Its lifetime is over."),
        _verify_result(VerifyCode.NOT_FOUND, (), "Well formed, but not a key we issued."),
        _verify_result(VerifyCode.MALFORMED, (), "Not one of our keys (wrong shape or checksum)."),
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "apikeys-bot key API",
            "version": "1",
            "description": "Verify keys, forward auth for reverse proxies, leak reports from GitHub, and the routes "
                           "operators need. Errors are JSON `{\"error\": \"...\"}`; a request the server cannot parse "
                           "is answered 400 by the HTTP server itself.",
        },
        "tags": [{"name": "key API"}, {"name": "leaks"}, {"name": "operations"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer apk_…`"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "githubSignature": {"type": "apiKey", "in": "header", "name": "Github-Public-Key-Signature",
                                    "description": "ECDSA P-256 / SHA-256 over the raw body, base64 DER, by the key "
                                                   "`Github-Public-Key-Identifier` names"},
            },
            "schemas": {
                "VerifyCode": {"type": "string", "enum": [code.value for code in VerifyCode],
                               "description": "The outcome of a verification."},
                "VerifyRequest": {"type": "object", "required": ["key"],
                                  "properties": {"key": {"type": "string", "examples": [EXAMPLE_KEY]}}},
                "VerifyResult": {"type": "object", "required": ["valid", "code"],
                                 "properties": {"valid": {"type": "boolean"}, "code": _ref("VerifyCode")},
                                 "oneOf": verify_results},
                "AuthFailure": {"type": "object", "required": ["code"], "properties": {
                    "code": {"allOf": [_ref("VerifyCode")], "not": {"const": "VALID"}},
                    "key_id": KEY_ID, "error": {"type": "string"}}},
                "Health": {"type": "object", "required": ["status", "database"], "properties": {
                    "status": {"enum": ["ok", "unavailable"]},
                    "database": {"type": "string", "examples": ["ok", "unreachable",
                                                                "read-only: revocations and audit entries cannot be written"]}}},
                "Unavailable": {"type": "object", "required": ["code", "error"], "properties": {
                    "code": {"const": "UNAVAILABLE"}, "error": {"type": "string"}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "GitHubLeak": {"type": "object", "required": ["token", "type"], "properties": {
                    "token": {"type": "string"}, "type": {"type": "string"}, "url": {"type": "string"},
                    "source": {"type": "string"}}},
                "GitHubFeedback": {"type": "object", "required": ["token_type", "label"], "properties": {
                    "token_hash": {"type": "string"}, "token_raw": {"type": "string"}, "token_type": {"type": "string"},
                    "label": {"enum": ["true_positive", "false_positive"]}}},
            },
        },
    }


DOCUMENT = json.dumps(build(), separators=(",", ":")).encode("utf-8")
