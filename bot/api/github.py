"""``POST /v1/secret-scanning/github``: GitHub's secret scanning partner alerts (``bot.github``
checks the signature before it reads the body, then every match is handled in one transaction)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import InvalidInput

from .. import github as scanning
from ..logs import fields
from ..wsgi import HttpError, read_body, respond
from .routes import Route
from .schema import EXAMPLE_KEY, RETRY_AFTER, SLOW_BODY, error, ref

if TYPE_CHECKING:
    from .app import KeyApiApp

log = logging.getLogger("apikeys.http")
RETRY_GITHUB = 10  # seconds: Retry-After of an alert that waits for GitHub's keys (fetched meanwhile)


def github_alert(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    raw = read_body(environ, scanning.MAX_ALERT_BODY)
    try:
        answer = app.github_alerts.handle(app.store, raw, environ.get("HTTP_GITHUB_PUBLIC_KEY_IDENTIFIER"),
                                          environ.get("HTTP_GITHUB_PUBLIC_KEY_SIGNATURE"))
    except scanning.AlertRefused as exc:
        log.info(fields(event="github_alert", outcome="refused", status=exc.status, why=exc.message))
        if exc.status == 503:  # GitHub's keys are still being fetched (or could not be): GitHub retries
            return respond(start_response, 503, {"error": exc.message}, [("Retry-After", str(RETRY_GITHUB))])
        raise HttpError(exc.status, exc.message) from None
    except InvalidInput as exc:
        raise HttpError(400, str(exc)) from None
    return respond(start_response, 200, answer)


ALERT = {
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
        "schema": {"type": "array", "items": ref("GitHubLeak")},
        "example": [{"token": EXAMPLE_KEY, "type": "apikeys_api_key",
                     "url": "https://github.com/octo/repo/blob/abc/config.py", "source": "content"}]}}},
    "responses": {
        "200": {"description": "GitHub's feedback, one element per match in order, each token named by its "
                               "SHA-256 (`true_positive`: a key we issued, active, revoked or expired).",
                "content": {"application/json": {
                    "schema": {"type": "array", "items": ref("GitHubFeedback")},
                    "example": [{"token_hash": "63b5609106f9d1c5e2f0b0c7a4c1a6e38f0c1d2b3a4e5f60718293a4b5c6d7e8",
                                 "token_type": "apikeys_api_key", "label": "true_positive"}]}}},
        "400": error("Signed, but not a JSON array of matches; nothing changed.", scanning.BODY_SHAPE),
        "401": error("A missing, unknown or wrong signature; nothing changed.",
                     "missing Github-Public-Key-Signature header: alerts must be signed by GitHub"),
        "408": SLOW_BODY,
        "413": error("The body is larger than 1 MiB.", "request body larger than 1048576 bytes"),
        "503": {**error("GitHub's public keys are still being fetched, could not be fetched to check the signature, "
                        "or the key store does not answer; GitHub retries (Retry-After says when).",
                        "GitHub's public keys could not be fetched to check the signature; try again"),
                "headers": RETRY_AFTER},
    },
}

SCHEMAS = {
    "GitHubLeak": {"type": "object", "required": ["token", "type"], "properties": {
        "token": {"type": "string"}, "type": {"type": "string"}, "url": {"type": "string"},
        "source": {"type": "string"}}},
    "GitHubFeedback": {"type": "object", "required": ["token_type", "label"], "properties": {
        "token_hash": {"type": "string"}, "token_raw": {"type": "string"}, "token_type": {"type": "string"},
        "label": {"enum": ["true_positive", "false_positive"]}}},
}
SECURITY = {
    "githubSignature": {"type": "apiKey", "in": "header", "name": "Github-Public-Key-Signature",
                        "description": "ECDSA P-256 / SHA-256 over the raw body, base64 DER, by the key "
                                       "`Github-Public-Key-Identifier` names"},
}

ROUTES = [Route(scanning.ALERT_PATH, ("POST",), github_alert, "secret_scanning_github", operations={"post": ALERT})]
