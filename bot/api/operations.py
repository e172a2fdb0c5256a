"""What operators and load balancers call: ``/healthz``, ``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import metrics as counting
from ..wsgi import respond, respond_raw
from .routes import Route
from .schema import error, ref

if TYPE_CHECKING:
    from .app import KeyApiApp


class Health(BaseModel):
    """What ``/healthz`` answers."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "database": "ok"}]})
    status: Literal["ok", "unavailable"]
    database: str = Field(examples=["ok", "unreachable", "read-only: revocations and audit entries cannot be written"])


def health(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    """200 when keys can be checked and revoked; 503 saying which part fails (a load balancer
    takes a replica out whose revocations would fail, not only one that cannot check keys)."""
    if not app.store.db.ping():
        return respond(start_response, 503, Health(status="unavailable", database="unreachable").model_dump())
    problem = app.store.db.writable()
    if problem is not None:
        return respond(start_response, 503, Health(status="unavailable", database=problem).model_dump())
    return respond(start_response, 200, {"status": "ok", "database": "ok"})


def metrics(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    return respond_raw(start_response, app.metrics.render(), counting.CONTENT_TYPE)


def document(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    return respond_raw(start_response, app.document, "application/json")


HEALTH = {
    "operationId": "health",
    "tags": ["operations"],
    "summary": "Health for load balancers",
    "responses": {
        "200": {"description": "The key store answers.", "content": {"application/json": {
            "schema": ref("Health"), "example": {"status": "ok", "database": "ok"}}}},
        "503": {"description": "The key store does not answer, or cannot be written (revocations would "
                               "fail): `database` says which.", "content": {"application/json": {
            "schema": ref("Health"), "example": {"status": "unavailable", "database": "unreachable"}}}},
    },
}
METRICS = {
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
        "404": error("Served on METRICS_PORT instead.", "no route /metrics"),
    },
}
DOCUMENT = {
    "operationId": "openapi",
    "tags": ["operations"],
    "summary": "This document",
    "responses": {"200": {"description": "The OpenAPI 3.1 description of the key API.",
                          "content": {"application/json": {"schema": {"type": "object"}}}}},
}
MODELS = (Health,)

ROUTES = [
    Route("/healthz", ("GET", "HEAD"), health, "healthz", operations={"get": HEALTH}),
    # METRICS_PORT set: /metrics is served on that listener only, and is not a route here.
    Route("/metrics", ("GET", "HEAD"), metrics, "metrics", operations={"get": METRICS},
          off=lambda app: None if app.metrics is not None else "no route /metrics"),
    Route("/openapi.json", ("GET", "HEAD"), document, "openapi", operations={"get": DOCUMENT}),
]
