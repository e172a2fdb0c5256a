"""What the route families' OpenAPI operations share: references, the error shapes, the 503 of an
unavailable key store and the 408 of a slow body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

EXAMPLE_KEY = "apk_6Ra5LPT6Ui8CrvRMaHXJVY0yQVjP"
EXAMPLE_KEY_ID = "key_0uYlq5eoKkRzSWB2p"
KEY_ID = {"type": "string", "pattern": "^key_[0-9A-Za-z]{17}$", "examples": [EXAMPLE_KEY_ID]}
TIME = {"type": ["string", "null"], "format": "date-time", "examples": ["2027-03-01T00:00:00Z"]}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON Schema, as an OpenAPI 3.1 component (3.1 schemas are JSON Schema)."""
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def error(description: str, example: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": ref("Error"), "example": {"error": example}}}}


UNAVAILABLE = {"description": "The key store cannot be read; try again (nothing was decided: never a pass). "
                              "Retry-After says when.",
               "headers": RETRY_AFTER,
               "content": {"application/json": {"schema": ref("Unavailable"), "example": {
                   "code": "UNAVAILABLE", "error": "the key store is unavailable; try again"}}}}

SLOW_BODY = error("The body took longer than APIKEYS_BODY_TIMEOUT (10 s) to arrive; the connection is closed.",
                  "the request body took longer than 10 s to arrive")
