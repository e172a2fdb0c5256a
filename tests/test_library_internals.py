"""The library internals the code relies on, where no public API does the same; each is pinned in
``pyproject.toml`` and checked here, so that an upgrade that moves one fails loudly here instead of
silently elsewhere.

* slack-bolt: ``App._middleware_error_handler.handle`` (``bot.slack.gate`` tells Bolt's 500 for a
  body it misread from one after a listener ran; Bolt's ``app.error`` replaces the handler instead of
  observing it). The rest it uses is public: ``App.listener_runner.run``.
* prometheus-client: a ``Histogram`` child's ``_sum`` and ``_buckets`` values, one per bucket and
  non-cumulative (``bot.metrics`` adds a second's counts to them in one go, off the hot path).
* slack_bolt.request.internals: ``parse_body`` and ``build_context`` (``bot.slack.gate``, ``bot.slack.app``
  read a body exactly as Bolt reads it).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from slack_bolt import App
from slack_bolt.request.internals import build_context, parse_body


def test_bolt_has_the_middleware_error_handler_the_gate_watches():
    app = App(signing_secret="s", token="xoxb-x", token_verification_enabled=False)
    assert callable(app._middleware_error_handler.handle)
    assert callable(app.listener_runner.run)


def test_the_gate_refuses_to_start_on_a_bolt_without_those_seams():
    import pytest

    from bot.slack.gate import _Dispatch, _watch

    class Other:
        listener_runner = None

    with pytest.raises(RuntimeError, match="must be updated"):
        _watch(Other(), _Dispatch())


def test_a_histogram_child_keeps_its_sum_and_one_value_per_bucket():
    registry = CollectorRegistry()
    child = Histogram("h", "h", ("route",), buckets=(0.1, 1.0), registry=registry).labels("x")
    child.observe(0.5)
    assert len(child._buckets) == 3 and [b.get() for b in child._buckets] == [0.0, 1.0, 0.0]  # not cumulative
    assert child._sum.get() == 0.5
    child._buckets[0].inc(2)
    child._sum.inc(0.1)
    samples = {(s.name, s.labels.get("le")): s.value for s in registry.collect().__next__().samples}
    assert samples[("h_bucket", "0.1")] == 2.0 and samples[("h_bucket", "1.0")] == 3.0


def test_bolt_reads_a_body_with_parse_body_and_build_context():
    assert parse_body("a=1", "application/x-www-form-urlencoded") == {"a": "1"}
    assert callable(build_context)
