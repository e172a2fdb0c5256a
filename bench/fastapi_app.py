"""The comparison a team would write for itself in an afternoon: FastAPI on uvicorn (uvloop,
httptools), one SHA-256 and one indexed lookup in SQLite per request (in the event loop: an `async def`
endpoint, the faster of FastAPI's two styles here), no logging. It reads the
same ``api_keys`` table as ours (same digest). Used by ``bench.verify_throughput``; not part of
the product.

    FASTAPI_DB=/path/verify.db uvicorn bench.fastapi_app:app --workers 2 --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading

from fastapi import FastAPI, Header, Response

app = FastAPI()
_local = threading.local()


def _conn() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(os.environ["FASTAPI_DB"], check_same_thread=False)
    return conn


@app.get("/v1/auth")
async def auth(authorization: str = Header(default="")) -> Response:
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    row = _conn().execute("SELECT id, owner, revoked_at FROM api_keys WHERE digest = ?",
                          (hashlib.sha256(key.encode()).hexdigest(),)).fetchone()
    if row is None or row[2] is not None:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return Response(status_code=204, headers={"X-Key-Id": row[0], "X-Key-Owner": row[1]})
