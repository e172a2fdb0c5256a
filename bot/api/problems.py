"""RFC 9457 problem details (``application/problem+json``): how the management API's routes answer
an error. ``Problem`` is an ``HttpError`` with a machine-readable ``code`` (a member the RFC allows)
and its own headers; the dispatcher renders every error of a route declared with ``problems=True``
this way, its own 404/405/413/503 included."""

from __future__ import annotations

from typing import Any

from storage.redaction import redact, redact_value

from ..wsgi import STATUS_TEXT, HttpError, _to_json

PROBLEM_JSON = "application/problem+json"
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "request_timeout", 409: "conflict", 411: "length_required", 413: "too_large",
         415: "unsupported_media_type", 422: "invalid", 429: "rate_limited", 500: "internal", 503: "unavailable"}


class Problem(HttpError):
    def __init__(self, status: int, detail: str, *, code: str | None = None,
                 headers: list[tuple[str, str]] | None = None, **members: Any):
        super().__init__(status, detail)
        self.code = code or CODES.get(status, "error")
        self.extra_headers = list(headers or [])
        self.members = members

    @property
    def headers(self) -> list[tuple[str, str]] | None:
        return [*(super().headers or []), *self.extra_headers] or None


def title(status: int) -> str:
    return STATUS_TEXT[status].split(" ", 1)[1]


def body(status: int, detail: str, code: str | None = None, **members: Any) -> dict[str, Any]:
    """A problem's members; anything key-shaped in them is masked (a detail may name what the caller sent)."""
    return {"type": "about:blank", "title": title(status), "status": status, "detail": redact(detail),
            "code": code or CODES.get(status, "error"), **redact_value(members)}


def respond_problem(start_response, exc: HttpError, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    members = exc.members if isinstance(exc, Problem) else {}
    code = exc.code if isinstance(exc, Problem) else None
    payload = _to_json(body(exc.status, exc.message, code, **members)).encode("utf-8")
    out = [("Content-Type", PROBLEM_JSON), ("Cache-Control", "no-store"), *(exc.headers or []), *(headers or []),
           ("Content-Length", str(len(payload)))]
    start_response(STATUS_TEXT[exc.status], out)
    return [payload]


PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail", "code"],
    "description": "RFC 9457 problem details; `code` says what went wrong, for programs.",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string"}},
}


def problem(description: str, status: int, example: str, code: str | None = None,
            headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response of problem details."""
    response: dict[str, Any] = {"description": description, "content": {PROBLEM_JSON: {
        "schema": {"$ref": "#/components/schemas/Problem"}, "example": body(status, example, code)}}}
    if headers:
        response["headers"] = headers
    return response
