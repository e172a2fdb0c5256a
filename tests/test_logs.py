"""Log lines: masked secrets, logfmt fields, and a handler whose threads never wait on each other's writes."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading

import pytest

from bot.logs import FORMAT, GroupWriteHandler, RedactingFormatter, fields
from storage.keyformat import generate_secret


class SlowStream(io.StringIO):
    """A stream whose write takes a while and records each call, to catch concurrent writers."""

    def __init__(self):
        super().__init__()
        self.writes = 0
        self.inside = 0
        self.overlapped = False
        self._guard = threading.Lock()

    def write(self, text: str) -> int:
        with self._guard:
            self.inside += 1
            self.overlapped |= self.inside > 1
            self.writes += 1
        try:
            threading.Event().wait(0.0005)  # let other threads run while this write is "in the kernel"
            return super().write(text)
        finally:
            with self._guard:
                self.inside -= 1


def make_logger(stream, name: str) -> logging.Logger:
    handler = GroupWriteHandler(stream)
    handler.setFormatter(RedactingFormatter(FORMAT))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_a_key_in_a_log_line_is_masked_to_its_last_four():
    stream = io.StringIO()
    log = make_logger(stream, "test.mask")
    secret = generate_secret()
    log.info("someone pasted %s here", secret)
    line = stream.getvalue()
    assert secret not in line and secret[:-4] not in line
    assert f"apk_\u2026{secret[-4:]}[redacted]" in line


def test_fields_are_logfmt_and_skip_missing_values():
    assert fields(event="verify", code="VALID", key_id=None) == "event=verify code=VALID"
    assert fields(event="x", reason='a "quoted" word') == 'event=x reason="a \\"quoted\\" word"'
    assert fields(event="x", empty="") == 'event=x empty=""'
    assert fields(n=3, ok=True) == "n=3 ok=True"


def test_a_value_with_line_breaks_cannot_forge_a_log_line():
    stream = io.StringIO()
    log = make_logger(stream, "test.forge")
    log.info(fields(event="key.revoked", reason="rotation\n2030-01-01 00:00:00,000 INFO fake: event=all_clear\r"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith('reason="rotation\\n2030-01-01 00:00:00,000 INFO fake: event=all_clear\\r"')


def test_lines_from_many_threads_arrive_whole_once_each_in_order_and_with_fewer_writes():
    stream = SlowStream()
    log = make_logger(stream, "test.threads")
    threads, per_thread = 8, 200
    start = threading.Barrier(threads)

    def work(n: int):
        start.wait()
        for i in range(per_thread):
            log.info(fields(event="verify", thread=n, seq=i))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == threads * per_thread
    for n in range(threads):
        mine = [line for line in lines if f" thread={n} " in line]
        assert [line.rsplit("seq=", 1)[1] for line in mine] == [str(i) for i in range(per_thread)]
    assert all(line.count(" INFO ") == 1 and "event=verify" in line for line in lines)  # no torn lines
    assert not stream.overlapped  # one writer at a time
    assert stream.writes < threads * per_thread  # lines that queued up went out together


def test_each_line_is_written_by_the_time_the_only_logging_thread_returns():
    stream = io.StringIO()
    log = make_logger(stream, "test.prompt")
    log.info("first")
    assert stream.getvalue().endswith("first\n")
    log.warning("second")
    assert stream.getvalue().endswith("second\n")


def test_a_stream_that_fails_once_does_not_stop_later_lines(capsys):
    class Flaky(io.StringIO):
        fail = True

        def write(self, text):
            if self.fail:
                self.fail = False
                raise OSError("disk full")
            return super().write(text)

    stream = Flaky()
    log = make_logger(stream, "test.flaky")
    log.info("lost")
    log.info("kept")
    assert stream.getvalue().endswith("kept\n")
    assert "disk full" in capsys.readouterr().err  # logging's own report of the failure


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_neither_repeats_the_parents_pending_lines_nor_waits_for_its_writer(tmp_path):
    stream = io.StringIO()
    log = make_logger(stream, "test.fork")
    handler = log.handlers[0]
    # As if another thread of the parent were in the middle of writing "pending" when the fork came.
    with handler.lock:
        handler._pending.append("pending\n")
        handler._writing = True
    out = tmp_path / "child.log"
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker
        try:
            with open(out, "w") as child_stream:
                handler.setStream(child_stream)
                log.info("from the child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    written = out.read_text()
    assert "from the child" in written
    assert "pending" not in written
    with handler.lock:
        handler._pending.clear()
        handler._writing = False


def test_the_server_configuration_writes_to_stderr_through_the_group_writer(monkeypatch):
    from bot import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        logs.configure()
        assert isinstance(root.handlers[0], GroupWriteHandler)
        logging.getLogger("apikeys.http").info(fields(event="verify", code="VALID"))
        assert stream.getvalue().rstrip().endswith("apikeys.http: event=verify code=VALID")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
