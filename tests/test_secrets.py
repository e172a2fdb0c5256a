"""No full key in a log line, a database row or CLI output; no raw control character in a log line.

Each test here names one way a secret (or a terminal escape) used to get through, found by a
review that tried it as an attacker or a careless insider would.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import open_store
from storage.keyformat import generate_secret

from .conftest import ADMIN, start_server

CONTROLS = ("\x1b", "\x07", "\x00", "\x9b")


def _raw_request(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(data)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _assert_clean(text_: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text_ and secret[4:-4] not in text_, "a full key reached the log"
    for ch in CONTROLS:
        assert ch not in text_, f"a raw control character {ch!r} reached the log"


# ======================================================================= the server's own log


def test_malformed_request_lines_carrying_a_key_are_logged_masked_and_escaped(database_url, tmp_path):
    secret_in_query, secret_as_method, secret_in_header = generate_secret(), generate_secret(), generate_secret()
    server = start_server(database_url, tmp_path, {"WEB_CONCURRENCY": "1"})
    try:
        bad_requests = [
            f"GET /v1/auth?api_key={secret_in_query}\x01\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"{secret_as_method} /v1/auth HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"GET /v1/auth HTTP/1.1\r\nHost: x\r\nX-API-Key\x07: {secret_in_header}\r\n\r\n".encode(),
        ]
        for request in bad_requests:
            answer = _raw_request(server.url, request)
            assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "Invalid request" in log  # the server did log these requests …
    _assert_clean(log, secret_in_query, secret_as_method, secret_in_header)  # … masked and escaped
    assert "\\x1b" in log or "\\x01" in log


def test_every_logger_writes_through_the_one_redacting_handler():
    import logging

    import gunicorn.glogging  # noqa: F401  (gunicorn's loggers get handlers of their own)
    import slack_bolt  # noqa: F401
    import slack_sdk  # noqa: F401

    from bot import logs
    from bot.server import _Logger

    class Cfg:  # the settings gunicorn's logger reads
        loglevel, errorlog, accesslog, syslog, capture_output = "info", "-", "-", False, False
        logconfig_dict, logconfig_json, logconfig = {}, None, None
        disable_redirect_access_to_syslog = False
        access_log_format = '%(h)s "%(r)s" %(s)s'
        logger_class = "gunicorn.glogging.Logger"

        def __getattr__(self, name):
            return None

    logs.configure()
    try:
        _Logger(Cfg())
        for name, logger in logging.Logger.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                assert not logger.handlers, f"logger {name} has a handler of its own: {logger.handlers}"
                assert logger.propagate, f"logger {name} does not reach the root handler"
        (root_handler,) = logging.getLogger().handlers
        assert isinstance(root_handler.formatter, logs.RedactingFormatter)
    finally:
        logging.getLogger().handlers.clear()


def test_control_characters_in_a_logged_value_are_escaped():
    import io
    import logging

    from bot.logs import FORMAT, GroupWriteHandler, RedactingFormatter, fields

    stream = io.StringIO()
    handler = GroupWriteHandler(stream)
    handler.setFormatter(RedactingFormatter(FORMAT))
    logger = logging.getLogger("test.controls")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning(fields(event="revoke", actor="ana\x1b]0;owned\x07", note="a\x00b\x9bc"))
    logger.warning("reply failed: %s", "x\x1b[2J")
    line = stream.getvalue()
    _assert_clean(line)
    assert "ana\\x1b]0;owned\\x07" in line and "a\\x00b\\x9bc" in line and "x\\x1b[2J" in line
    assert line.count("\n") == 2
