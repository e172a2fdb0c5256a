"""The PostgreSQL peer a team would write for itself: FastAPI on uvicorn (uvloop, httptools) with an
asyncpg pool, one SHA-256 and one indexed lookup per request, no logging. Reads the same
``api_keys`` table as ours. Used by ``bench.postgres``; not part of the product.

    FASTAPI_PG=postgresql://user:pass@host/db uvicorn bench.fastapi_pg_app:app --workers 2 --loop uvloop --http httptools
"""

from __future__ import annotations

import hashlib
import os

import asyncpg
from fastapi import FastAPI, Header, Response

app = FastAPI()
_pool: asyncpg.Pool | None = None


@app.on_event("startup")
async def _start() -> None:
    global _pool
    _pool = await asyncpg.create_pool(os.environ["FASTAPI_PG"], min_size=4, max_size=8)


@app.get("/v1/auth")
async def auth(authorization: str = Header(default="")) -> Response:
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    row = await _pool.fetchrow("SELECT id, owner, revoked_at FROM api_keys WHERE digest = $1",
                               hashlib.sha256(key.encode()).hexdigest())
    if row is None or row["revoked_at"] is not None:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return Response(status_code=204, headers={"X-Key-Id": row["id"], "X-Key-Owner": row["owner"]})
