"""A quiet start: the server's log says one line for each condition a person can act on, and
nothing else (no library warning about an argument we did not give, no library retry chatter)."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from bot import logs
from bot.config import Settings
from bot.slack import socket
from bot.slack.app import create_app, make_client

from .helpers import ADMIN
from .slackstub import SlackStub


@pytest.fixture
def server_log(monkeypatch):
    """Logging configured exactly as the server configures it, writing to a buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {name: logging.getLogger(name).level for name in logging.Logger.manager.loggerDict})
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def stub():
    with SlackStub() as running:
        yield running


def settings_for(stub: SlackStub, **extra: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": "sqlite://", "SLACK_BOT_TOKEN": stub.bot_token,
                              "SLACK_SIGNING_SECRET": "secret", "SLACK_APP_TOKEN": "xapp-1-A0-1-abc",
                              "SLACK_API_URL": stub.api_url, "APIKEYS_AUDIT_CHANNEL": "C0AUDIT01",
                              "APIKEYS_ADMINS": ADMIN, **extra})


def test_building_the_app_with_the_bot_token_in_the_environment_logs_nothing(server_log, stub, store, monkeypatch):
    settings = settings_for(stub)
    monkeypatch.setenv("SLACK_BOT_TOKEN", stub.bot_token)  # as on every real start: Bolt reads it too
    create_app(settings, store, client=make_client(settings))
    create_app(settings, store, client=make_client(settings), socket_mode=True)
    assert server_log.getvalue() == ""


class Stop(Exception):
    pass


def test_a_failed_socket_mode_connect_is_one_line_that_says_what_to_do(server_log, stub, store):
    settings = settings_for(stub)
    stub.fail_next("apps.connections.open", error="invalid_auth", times=2)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            raise Stop

    app = create_app(settings, store, client=make_client(settings), socket_mode=True)
    with pytest.raises(Stop):
        socket.connect(app, settings, sleep=sleep)
    lines = server_log.getvalue().splitlines()
    assert len(lines) == 3, lines  # "connecting", then one line for each failed attempt
    assert "connecting to Slack over Socket Mode" in lines[0]
    for line, wait in zip(lines[1:], ("1 s", "2 s"), strict=True):
        assert "ERROR" in line and "Socket Mode could not connect" in line
        assert "invalid_auth" in line and "SLACK_APP_TOKEN" in line and "xapp-" in line
        assert line.endswith(f"trying again in {wait}")
    assert settings.slack_app_token not in server_log.getvalue()
    assert waits == [1.0, 2.0]


def test_slack_out_of_reach_is_one_line_per_attempt(server_log, stub, store):
    settings = settings_for(stub)
    stub.stop()  # nothing listens there any more: every call is refused

    def sleep(seconds):
        raise Stop

    app = create_app(settings, store, client=make_client(settings), socket_mode=True)
    with pytest.raises(Stop):
        socket.connect(app, settings, sleep=sleep)
    lines = server_log.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert f"cannot reach {settings.slack_api_url}" in lines[1]


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_the_playground_removes_its_temporary_directory_when_it_exits(tmp_path, stop):
    import os
    import signal

    from bot.playground.launch import running

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "APIKEYS_")) and k != "DATABASE_URL"}
    env["TMPDIR"] = str(tmp_path)
    with running(tmp_path, env) as started:
        (scratch,) = tmp_path.glob("apikeys-playground-*")
        assert (scratch / "playground.db").exists()
        started.proc.send_signal(getattr(signal, stop))
        started.proc.wait(timeout=20)
    assert not scratch.exists()


def test_ctrl_c_stops_a_socket_mode_server_without_a_traceback(tmp_path):
    """Ctrl-C reaches every process of the terminal's group: the Socket Mode process too, which
    used to print a KeyboardInterrupt traceback; the server stops it itself."""
    import os
    import signal
    import subprocess
    import time

    from .helpers import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "APIKEYS_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/a.db", PORT=str(free_port()), SLACK_BOT_TOKEN="xoxb-1-2-abc",
               SLACK_APP_TOKEN="xapp-1-A0-1-abc", SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api/",
               APIKEYS_AUDIT_CHANNEL="C0AUDIT01", APIKEYS_ADMINS=ADMIN)
    proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while not any("Socket Mode could not connect" in line for line in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines) + rest
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
