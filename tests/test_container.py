"""The container: ``Dockerfile``, ``compose.yaml``, the nginx gateway and the Kubernetes example.

These machines have a docker client but no engine, so the image is built and started only where
``docker info`` answers. Everywhere: the Dockerfile's promises are read from it, its install steps
run in a fresh virtualenv (the same COPY sources) and the result serves and answers its own
HEALTHCHECK; ``compose.yaml`` validates against the Compose Specification's JSON schema (Debian's
docker-compose package ships it) and says what the stack promises; the gateway's nginx
configuration runs in a real nginx in front of the real server; the Kubernetes example is YAML
that says the same as compose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from storage import open_store

from .helpers import ADMIN, cli_runner, free_port
from .servers import http_request, start_server

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), by stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _instruction(stage: list[str], name: str) -> list[str]:
    return [line[len(name) + 1:].strip() for line in stage if line.upper().startswith(name + " ")]


# ============================================================================ the Dockerfile
def test_the_image_is_multi_stage_slim_non_root_and_checks_its_health():
    build, final = _stages()
    assert "AS build" in build[0]
    assert "slim" in (ROOT / "Dockerfile").read_text().split("ARG PYTHON_IMAGE=")[1].split()[0]
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    user = _instruction(final, "USER")
    assert user and not user[-1].startswith(("root", "0")), "the server runs as a user without privileges"
    copies = _instruction(final, "COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), "only the built virtualenv reaches it"
    runs = " ".join(_instruction(final, "RUN"))
    assert not re.search(r"apt-get|apk add|gcc|build-essential|pip install", runs), "no build tools in the image"
    assert json.loads(_instruction(final, "CMD")[-1]) == ["python", "-m", "bot"]
    health = _instruction(final, "HEALTHCHECK")[-1]
    assert "/healthz" in health and health.split(" CMD ")[0].count("--") >= 3


def _healthcheck_command() -> list[str]:
    health = _instruction(_stages()[1], "HEALTHCHECK")[-1]
    return json.loads(health.split(" CMD ", 1)[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The build stage's steps, here: its COPY sources into a scratch context, a fresh virtualenv,
    ``pip install .``. Returns the virtualenv."""
    build = _stages()[0]
    scratch = tmp_path_factory.mktemp("image")
    context = scratch / "src"
    context.mkdir()
    for copy in _instruction(build, "COPY"):
        *sources, _target = copy.split()
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, context / source)
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "."],
                         cwd=context, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv


def test_the_image_install_gives_the_cli_and_the_server_from_the_installed_copy(installed, tmp_path):
    version = subprocess.run([str(installed / "bin" / "apikeys"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("apikeys ")
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import bot, storage; print(bot.__file__, "
                            "storage.__file__)"], capture_output=True, text=True, cwd=tmp_path)
    assert str(ROOT) not in where.stdout and str(installed) in where.stdout, where.stdout


def test_the_installed_server_migrates_serves_and_answers_its_healthcheck(installed, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_", "PYTHONPATH"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}", "HOST": "127.0.0.1", "PORT": str(port),
                "WEB_CONCURRENCY": "1", "PATH": f"{installed / 'bin'}:{env.get('PATH', '')}"})
    token = subprocess.run(["apikeys", "tokens", "create", "--name", "image", "--scope", "keys:read,keys:write",
                            "--actor", "test", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert token.returncode != 0 and "apikeys db upgrade" in token.stderr  # an empty database: told what to do
    assert subprocess.run(["apikeys", "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True).returncode == 0
    token = subprocess.run(["apikeys", "tokens", "create", "--name", "image", "--scope", "keys:read,keys:write",
                            "--actor", "test", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
    secret = json.loads(token.stdout)["token"]
    health = _healthcheck_command()
    server = subprocess.Popen(["python", "-m", "bot"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(health, env=env, cwd=tmp_path, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and server.poll() is None, "the HEALTHCHECK never passed"
            time.sleep(0.3)
        status, _, body = http_request(f"http://127.0.0.1:{port}", "POST", "/v1/keys",
                                       json.dumps({"name": "from-image", "owner": "ops"}),
                                       {"Authorization": f"Bearer {secret}"})
        assert status == 201 and json.loads(body)["key"].startswith("apk_")
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert subprocess.run(health, env=env, cwd=tmp_path, capture_output=True).returncode != 0


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "info"], capture_output=True).returncode != 0, reason="no container engine here (docker info fails)")
def test_the_image_builds_and_serves(tmp_path):  # pragma: no cover - needs a container engine
    tag = "apikeys-bot:test"
    assert subprocess.run(["docker", "build", "-t", tag, str(ROOT)], timeout=900).returncode == 0
    port = free_port()
    run = subprocess.run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:3000", tag], capture_output=True,
                         text=True, check=True)
    container = run.stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_request(f"http://127.0.0.1:{port}", "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(1)
        user = subprocess.run(["docker", "exec", container, "id", "-u"], capture_output=True, text=True).stdout
        assert user.strip() != "0"
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True)


# ============================================================================ compose.yaml
def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_yaml_is_valid_compose():
    if not COMPOSE_SPEC.exists():
        pytest.skip("the Compose Specification's schema comes with Debian's docker-compose (apt install "
                    "docker-compose; .ci/run does)")
    import jsonschema

    jsonschema.validate(_compose(), json.loads(COMPOSE_SPEC.read_text()))
    if shutil.which("docker-compose"):
        checked = subprocess.run(["docker-compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"],
                                 capture_output=True, text=True, cwd=ROOT)
        assert checked.returncode == 0, checked.stderr


def test_compose_migrates_as_the_owner_and_serves_as_the_least_privilege_role():
    services = _compose()["services"]
    assert set(services) == {"db", "migrate", "apikeys", "demo", "gateway"}
    migrate, server = services["migrate"], services["apikeys"]
    assert "apikeys db upgrade" in " ".join(migrate["command"]) and "db grant apikeys_runtime" in " ".join(
        migrate["command"])
    assert "//apikeys_owner:" in migrate["environment"]["DATABASE_URL"]
    assert "//apikeys_runtime:" in server["environment"]["DATABASE_URL"]
    assert "DATABASE_MIGRATION_URL" not in server["environment"], "the server never holds the owner's password"
    assert server["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["gateway"]["depends_on"]["apikeys"]["condition"] == "service_healthy"
    assert migrate["image"] == server["image"]
    init = (ROOT / "deploy" / "postgres" / "10-runtime-role.sh").read_text()
    assert "CREATE ROLE apikeys_runtime LOGIN" in init and os.access(ROOT / "deploy/postgres/10-runtime-role.sh",
                                                                      os.X_OK)
    assert "SUPERUSER" not in init.upper().replace("NOSUPERUSER", "")


# ============================================================================ the nginx gateway
@pytest.fixture
def gateway(database_url, tmp_path):
    """``deploy/nginx``'s gateway and demo upstream in a real nginx, in front of the real server:
    the service names replaced by loopback ports, nothing else changed."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt install nginx-light; .ci/run does)")
    open_store(database_url, bootstrap_admins=[ADMIN]).close()
    server = start_server(database_url, tmp_path)
    public, demo = free_port(), free_port()
    api_port = server.url.rsplit(":", 1)[1]
    gateway_conf = (ROOT / "deploy/nginx/gateway.conf").read_text()
    gateway_conf = gateway_conf.replace("server apikeys:3000;", f"server 127.0.0.1:{api_port};")
    gateway_conf = gateway_conf.replace("server demo:8080;", f"server 127.0.0.1:{demo};")
    gateway_conf = gateway_conf.replace("listen 8080;", f"listen 127.0.0.1:{public};")
    demo_conf = (ROOT / "deploy/nginx/demo.conf").read_text().replace("listen 8080;", f"listen 127.0.0.1:{demo};")
    assert gateway_conf.count("127.0.0.1") == 3 and demo_conf.count("127.0.0.1") == 1
    (tmp_path / "logs").mkdir()
    (tmp_path / "gateway.conf").write_text(gateway_conf)
    (tmp_path / "demo.conf").write_text(demo_conf)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/logs/error.log;\n"
        "events {}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path}; "
        f"fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};\n"
        f"  include {tmp_path}/gateway.conf; include {tmp_path}/demo.conf; }}\n")
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{public}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                http_request(url, "GET", "/")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.stop()


def test_the_gateway_lets_a_valid_key_through_and_refuses_a_revoked_one_at_once(gateway, database_url):
    store = open_store(database_url, create_schema=False)
    try:
        created = store.keys.create(name="web", owner="payments", actor=ADMIN)[0]
    finally:
        store.close()
    assert http_request(gateway, "GET", "/")[0] == 401
    status, headers, body = http_request(gateway, "GET", "/orders", headers={"Authorization": f"Bearer {created.secret}"})
    assert status == 200 and body.decode() == f"hello, key {created.key.id} of payments\n"
    assert headers.get("X-Saw-Authorization", "") == "", "the upstream never sees the key"
    assert http_request(gateway, "GET", "/", headers={"X-API-Key": created.secret})[0] == 200
    assert cli_runner(database_url)("revoke", created.key.id, "--actor", "alice", "--reason", "compromised").code == 0
    assert http_request(gateway, "GET", "/orders", headers={"Authorization": f"Bearer {created.secret}"})[0] == 401


# ============================================================================ Kubernetes
def test_the_kubernetes_example_runs_the_same_image_the_same_way():
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    by_kind = {d["kind"]: d for d in documents}
    assert set(by_kind) == {"Secret", "Job", "Deployment", "Service"}
    image = _compose()["services"]["apikeys"]["image"]
    job = by_kind["Job"]["spec"]["template"]["spec"]
    deployment = by_kind["Deployment"]["spec"]["template"]["spec"]
    [migrate], [server] = job["containers"], deployment["containers"]
    assert migrate["image"] == server["image"] == image
    assert migrate["command"] == _compose()["services"]["migrate"]["command"]
    env = {e["name"]: e for e in server["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "runtime-url"
    assert {e["name"]: e for e in migrate["env"]}["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "owner-url"
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/healthz"
    assert server["ports"][0]["containerPort"] == 3000
    assert deployment["securityContext"]["runAsNonRoot"] is True and server["securityContext"]["readOnlyRootFilesystem"]
    assert {"/tmp"} == {m["mountPath"] for m in server["volumeMounts"]}  # metrics files: the one place it writes
    assert by_kind["Deployment"]["spec"]["replicas"] >= 2
