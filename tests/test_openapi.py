"""``GET /openapi.json``: the document validates as OpenAPI 3.1, says what the code says (the
verification codes, the routes), and schemathesis, run against the real server (``python -m bot``,
two workers) with all its checks, finds nothing the server answers that the document does not say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from bot.api.auth import DOCUMENTED_METHODS as AUTH_DOCUMENTED
from bot.api.table import ROUTES
from bot.config import Settings
from bot.server import create_app
from storage import VerifyCode, open_store

from .helpers import ADMIN
from .servers import GitHubKeysStub, InProcessApp, ServerProcess, start_server

GITHUB = "/v1/secret-scanning/github"


@pytest.fixture
def document(database_url) -> dict:
    open_store(database_url).close()
    app = create_app(Settings(database_url=database_url, admins=(ADMIN,)))
    try:
        status, headers, body = InProcessApp(app).request("GET", "/openapi.json")
    finally:
        app.store.close()
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)  # raises on the first problem
    assert document["openapi"].startswith("3.1")


def test_it_describes_every_route_of_the_table_and_each_of_its_methods(document):
    """The document is derived from the route table: every route is in it with an operation per
    method it answers (HEAD is GET's), or says why it is not; nothing else is."""
    documented = set()
    for route in ROUTES.routes:
        if route.undocumented:
            assert route.path not in document["paths"]
            continue
        documented.add(route.path)
        operations = document["paths"][route.path]
        methods = {m.lower() for m in route.methods} - {"head"} if route.methods else set(AUTH_DOCUMENTED)
        assert set(operations) == methods, route.path
        if route.prefix:
            documented.add(route.path + "/{path}")
            assert set(document["paths"][route.path + "/{path}"]) == methods
    assert set(document["paths"]) == documented
    assert {"/v1/keys/verify", "/v1/auth", "/v1/auth/{path}", "/healthz", "/metrics", GITHUB} <= documented


def test_the_dispatch_answers_each_route_as_the_table_declares(database_url):
    """A method a route does not declare is a 405 naming the ones it does; a path not in the table is a 404."""
    open_store(database_url).close()
    app = create_app(Settings(database_url=database_url, admins=(ADMIN,)))
    try:
        client = InProcessApp(app)
        for route in ROUTES.routes:
            if route.methods is None:
                continue
            status, headers, _ = client.request("PATCH", route.path)
            assert status in (404, 405), route.path  # 404: served elsewhere on this server (Slack off)
            if status == 405:
                assert headers["Allow"] == ", ".join(route.methods)
        assert client.request("GET", "/v1/nothing")[0] == 404
    finally:
        app.store.close()


def test_the_verification_codes_and_results_are_the_codes_the_code_has(document):
    schemas = document["components"]["schemas"]
    assert schemas["VerifyCode"]["enum"] == [code.value for code in VerifyCode]
    verify = document["paths"]["/v1/keys/verify"]["post"]["responses"]
    assert {"200", "400", "413", "503"} <= verify.keys()
    auth = document["paths"]["/v1/auth"]["get"]["responses"]
    assert auth["204"]["headers"].keys() == {"X-Key-Id", "X-Key-Owner"}
    assert auth["401"]["headers"].keys() == {"WWW-Authenticate"}
    assert {"200", "400", "401", "413"} <= document["paths"][GITHUB]["post"]["responses"].keys()
    # Every answer the verify route gives is one of the documented shapes, by code.
    assert {branch["properties"]["code"]["const"] for branch in schemas["VerifyResult"]["oneOf"]} == {
        code.value for code in VerifyCode}
    assert schemas["VerifyRequest"]["required"] == ["key"]  # the pydantic model the route parses with


def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path, github_keys: GitHubKeysStub):
    """All of schemathesis's checks (no 5xx, status codes, content types, headers and bodies as
    documented, invalid data refused, 405 for undocumented methods, auth enforced), every phase, on
    the real server (two workers; GitHub's keys from a local stand-in); a valid key is sent so that
    ``/v1/auth`` answers 204 too."""
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        secret = store.keys.create(name="fuzz", owner="qa", actor="test")[0].secret
    finally:
        store.close()
    server = start_server(database_url, tmp_path, {"APIKEYS_GITHUB_KEYS_URL": github_keys.url})
    try:
        result = _schemathesis(server, secret, tmp_path, "--exclude-tag", "management")
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.split("SUMMARY")[-1]
    assert "Tested: 18" in summary and "failures" not in summary, result.stdout[-3000:]


def test_schemathesis_finds_nothing_in_the_management_api(database_url: str, tmp_path: Path):
    """The management routes with an admin token holding every scope: what schemathesis sends is
    answered as documented (2xx with a real token; 401 when it leaves the token out; 4xx problem
    details for every invalid body, query, header and id; 429 once it has spent the minute's writes)."""
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        token = store.tokens.create(name="fuzz", scopes="keys:read,keys:write,keys:revoke", actor="test")[1]
        store.keys.create(name="fuzz", owner="qa", actor="test")
    finally:
        store.close()
    server = start_server(database_url, tmp_path)
    try:
        result = _schemathesis(server, token, tmp_path, "--include-tag", "management")
        log = server.log()
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.split("SUMMARY")[-1]
    assert "Tested: 5" in summary and "failures" not in summary, result.stdout[-3000:]
    assert token not in log and "Traceback" not in log


def _schemathesis(server: ServerProcess, secret: str, tmp_path: Path, *selection: str) -> subprocess.CompletedProcess:
    # QUERY is the one method OpenAPI 3.1 cannot declare (3.2 adds it), so the document cannot say that
    # /v1/auth accepts it as it accepts every method; every other undeclared method is probed.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[phases.coverage]\nunexpected-methods = ["get", "put", "post", "delete", "options", "patch", "trace"]\n')
    st = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(st), "--config-file", str(config), "run", f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "40",
         "--seed", os.environ.get("SCHEMATHESIS_SEED", "16"), "--workers", "1", "--no-color",
         "--request-timeout", "10", "-H", f"Authorization: Bearer {secret}", "--report-dir", str(tmp_path), *selection],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
             "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])},
    )
    return result

