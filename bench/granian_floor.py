"""The server's own floor, for benchmark 2: a WSGI app that does nothing but answer, on granian
with the same workers and threads as ``python -m bot``. ``GET /`` answers a fixed JSON body, and
``POST /`` reads the request body first, as ``/v1/keys/verify`` does: what granian itself costs a
POST with a body next to a GET says how close to ``/healthz`` a POST route can ever get.

    granian --interface wsgi --workers 2 --blocking-threads 2 bench.granian_floor:app
"""

BODY = b'{"valid": true, "code": "VALID", "key_id": "key_0000000000000000a", "expires_at": null}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", HEADERS)
    return [BODY]
