"""The Slack stand-ins behave like Slack: ``bot.playground.slackstub.SlackStub`` (with the tests' helpers of
``tests.slackstub``) and the signed requests of ``tests.slackhttp``.

The stub is exercised with slack_sdk's real clients (``WebClient``, ``WebhookClient``) and its
retry handlers; the sender is exercised against a real Bolt app served over WSGI, whose request
verification proves the signatures are right.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from types import SimpleNamespace
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from freezegun import freeze_time
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from bot.slack.values import ListView
from tests.slackhttp import SlackSender, button, find_buttons
from tests.slacklimits import assert_stub_within_limits, slack_limit_problems
from tests.slackstub import ADMIN_USER, MEMBER_USER, OTHER_TEAM, OTHER_WORKSPACE_USER, OWN_TEAM, SlackStub, summary

SECRET = "test-signing-secret"
FAST = FixedValueRetryIntervalCalculator(fixed_internal=0.01)


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as s:
        yield s
        assert_stub_within_limits(s)


@pytest.fixture
def client(stub: SlackStub) -> WebClient:
    return WebClient(token="xoxb-test", base_url=stub.api_url)


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# ---------------------------------------------------------------------- Web API


def test_auth_test_answers_for_the_bot_token_only(stub: SlackStub, client: WebClient):
    assert stub.api_url == f"http://127.0.0.1:{stub.port}/api/"
    data = client.auth_test().data
    assert data == {"ok": True, "url": "https://own.slack.com/", "team": "Own Corp", "user": "apikeys",
                    "team_id": OWN_TEAM, "user_id": "UBOT00001", "bot_id": "B0BOT0001",
                    "is_enterprise_install": False}
    call = stub.api_calls("auth.test")[0]
    assert call.headers["authorization"] == "Bearer xoxb-test" and call.token == "xoxb-test"

    with pytest.raises(SlackApiError) as err:
        WebClient(token="xoxb-wrong", base_url=stub.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"
    assert stub.calls[-1].token == "xoxb-wrong" and not stub.calls[-1].ok


def _refused(request) -> tuple[int, dict]:
    try:
        urllib.request.urlopen(request)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    raise AssertionError("the stand-in answered")


def test_the_stand_in_answers_the_bot_only(stub: SlackStub):
    """A web page the operator visits must not post messages (or anything) through it: GET is refused
    (405), so is anything a browser sends (Origin, Sec-Fetch-*) and any Host but this machine's (403),
    and a body that is neither a form nor JSON (415). Nothing is recorded."""
    before = len(stub.calls)
    assert _refused(stub.api_url + "auth.test?token=xoxb-test")[0] == 405
    post = stub.api_url + "chat.postMessage"
    body = b"token=xoxb-test&channel=C0INCIDENT&text=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
    for headers, status in [({"Origin": "https://evil.example"}, 403), ({"Sec-Fetch-Site": "cross-site"}, 403),
                            ({"Sec-Fetch-Mode": "no-cors"}, 403), ({"Host": "evil.example"}, 403),
                            ({"Content-Type": "text/plain"}, 415)]:
        request = urllib.request.Request(post, data=body, method="POST", headers=headers)
        code, answer = _refused(request)
        assert code == status and answer["ok"] is False, headers
    assert len(stub.calls) == before


def test_the_stand_in_and_the_playground_api_share_one_guard(stub: SlackStub, monkeypatch):
    """One check decides for both servers (bot.playground.guard.refusal): neither has a copy of its own."""
    from bot.playground import guard
    from bot.playground.app import PlaygroundApp

    seen = []

    def refuse_all(headers, **kwargs):
        seen.append((kwargs["what"], kwargs["own_pages"], headers.get("host")))
        return guard.Refusal(403, "refused: by the one guard")

    monkeypatch.setattr(guard, "refusal", refuse_all)
    request = urllib.request.Request(stub.api_url + "auth.test", data=b"token=xoxb-test", method="POST")
    assert _refused(request) == (403, {"ok": False, "error": "refused: by the one guard"})
    statuses = []
    answer = PlaygroundApp(None, SimpleNamespace(), host=None)(
        {"PATH_INFO": "/playground/api/state", "REQUEST_METHOD": "GET", "HTTP_HOST": "127.0.0.1:3000"},
        lambda status, headers: statuses.append(status))
    assert statuses == ["403 Forbidden"] and json.loads(b"".join(answer))["error"] == "refused: by the one guard"
    assert [own_pages for _, own_pages, _ in seen] == [False, True]
    assert seen[0][2] == f"127.0.0.1:{stub.port}" and seen[1][2] == "127.0.0.1:3000"
    assert stub.calls == []


def _raw(stub: SlackStub, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (a malformed one, say) and read the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", stub.port), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("request_line, extra, body, status", [
    ("HEAD /api/auth.test", "", b"", 405),
    ("OPTIONS /api/chat.postMessage", "Access-Control-Request-Method: POST\r\n", b"", 405),
    ("GET /api/chat.postMessage?token=xoxb-test&channel=C0INCIDENT&text=hi", "", b"", 405),
    ("DELETE /response/cmd-1", "", b"", 405),
    ("POST /api/auth.test", "Content-Length: abc\r\n", b"token=xoxb-test", 400),
    ("POST /api/auth.test", "Content-Length: -5\r\n", b"token=xoxb-test", 400),
    ("POST /api/auth.test", "Content-Length: 99999999\r\n", b"token=xoxb-test", 413),
    ("POST /nowhere", "Content-Length: 0\r\n", b"", 404),
], ids=["head", "options", "get-a-write-method", "delete", "length-not-a-number", "negative-length", "too-large",
        "unknown-path"])
def test_a_bad_request_gets_a_json_4xx_and_records_nothing(stub: SlackStub, capfd, request_line, extra, body,
                                                          status):
    """Never an HTML error page, a dropped connection or a traceback: a JSON error, and nothing recorded."""
    request = (f"{request_line} HTTP/1.1\r\nHost: 127.0.0.1:{stub.port}\r\n"
               f"Content-Type: application/x-www-form-urlencoded\r\n{extra}Connection: close\r\n\r\n").encode() + body
    got, headers, answer = _raw(stub, request)
    assert got == status, (got, answer)
    assert headers["content-type"].startswith("application/json")
    if request_line.startswith("HEAD"):
        assert answer == b""
    else:
        data = json.loads(answer)
        assert data["ok"] is False and data["error"]
    if status == 405:
        assert headers["allow"] == "POST"
    assert stub.calls == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("method, body", [
    ("chat.update", {"channel": "C0INCIDENT", "ts": ["1.2"], "text": "x"}),
    ("chat.update", {"channel": ["C0INCIDENT"], "ts": "1.2", "text": "x"}),
    ("chat.delete", {"channel": "C0INCIDENT", "ts": {"a": 1}}),
    ("chat.postMessage", {"channel": "C0INCIDENT", "text": "x", "thread_ts": ["1.2"]}),
    ("chat.postEphemeral", {"channel": "C0INCIDENT", "user": ["U1"], "text": "x"}),
    ("conversations.info", {"channel": ["C0INCIDENT"]}),
])
def test_arguments_of_the_wrong_type_are_a_slack_error_not_a_crash(stub: SlackStub, capfd, method, body):
    """Slack answers invalid_arguments (HTTP 200, ok false); the stand-in did raise and drop the connection."""
    request = urllib.request.Request(stub.api_url + method, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer xoxb-test"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200 and json.load(resp) == {"ok": False, "error": "invalid_arguments"}
    assert stub.messages == {}
    assert "Traceback" not in capfd.readouterr().err


def test_unknown_method(stub: SlackStub):
    req = urllib.request.Request(stub.api_url + "apps.nonsense", data=b"token=xoxb-test", method="POST")
    with urllib.request.urlopen(req) as resp:  # Slack answers unknown methods with HTTP 200
        assert resp.status == 200 and json.load(resp) == {"ok": False, "error": "unknown_method"}


def test_post_message_records_blocks_from_a_json_body(stub: SlackStub, client: WebClient):
    blocks = [section("*Key revoked*"), {"type": "divider"}]
    first = client.chat_postMessage(channel="C0INCIDENT", text="Key revoked", blocks=blocks)
    second = client.chat_postMessage(channel="C0INCIDENT", text="again")
    assert first["channel"] == "C0INCIDENT" and float(second["ts"]) > float(first["ts"])
    assert first["message"]["blocks"] == blocks and first["message"]["user"] == "UBOT00001"
    assert first["message"]["bot_id"] == "B0BOT0001" and first["message"]["ts"] == first["ts"]

    call = stub.wait_for_api("chat.postMessage")
    assert call.headers["content-type"].startswith("application/json")
    assert call.body["blocks"] == blocks and call.body["text"] == "Key revoked"
    assert stub.messages[("C0INCIDENT", first["ts"])]["text"] == "Key revoked"


def test_form_encoded_json_fields_are_decoded(stub: SlackStub, client: WebClient):
    client.api_call("chat.postMessage", data={"channel": "C0INCIDENT", "text": "[not json]",
                                              "blocks": json.dumps([{"type": "divider"}])})
    call = stub.api_calls("chat.postMessage")[-1]
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.body == {"channel": "C0INCIDENT", "text": "[not json]", "blocks": [{"type": "divider"}]}


def test_post_message_validation(stub: SlackStub, client: WebClient):
    stub.channels_bot_is_not_in.add("C0PRIVATE")
    stub.unknown_channels.add("C0GONE")
    cases = [
        (dict(channel="C0INCIDENT", text="x", blocks=[{"type": "divider"}] * 51), "invalid_blocks"),
        (dict(channel="C0INCIDENT"), "no_text"),
        (dict(text="no channel"), "channel_not_found"),
        (dict(channel="C0PRIVATE", text="hi"), "not_in_channel"),
        (dict(channel="C0GONE", text="hi"), "channel_not_found"),
    ]
    for body, error in cases:
        with pytest.raises(SlackApiError) as err:
            client.api_call("chat.postMessage", json=body)  # api_call skips slack_sdk's own checks
        assert err.value.response.status_code == 200 and err.value.response["error"] == error
    assert client.chat_postMessage(channel="C0INCIDENT", text="x", blocks=[{"type": "divider"}] * 50)["ok"]
    assert stub.take_limit_problems() == ["chat.postMessage: blocks: 51 blocks, Slack allows 50"]
    assert client.conversations_info(channel="C0PRIVATE")["channel"]["is_member"] is False
    assert client.conversations_info(channel="C0INCIDENT")["channel"] == {
        "id": "C0INCIDENT", "name": "incident", "is_channel": True, "is_im": False,
        "is_private": False, "is_archived": False, "is_member": True}


def test_ephemeral_update_delete_and_users(stub: SlackStub, client: WebClient):
    eph = client.chat_postEphemeral(channel="C0INCIDENT", user=MEMBER_USER, text="only you")
    assert eph["message_ts"]
    with pytest.raises(SlackApiError, match="user_not_found"):
        client.api_call("chat.postEphemeral", json={"channel": "C0INCIDENT", "text": "x"}).validate()
    posted = client.chat_postMessage(channel="C0INCIDENT", text="v1")
    updated = client.chat_update(channel="C0INCIDENT", ts=posted["ts"], text="v2")
    assert (updated["channel"], updated["ts"]) == ("C0INCIDENT", posted["ts"])
    assert stub.messages[("C0INCIDENT", posted["ts"])]["text"] == "v2"
    assert client.chat_delete(channel="C0INCIDENT", ts=posted["ts"])["ok"]
    assert ("C0INCIDENT", posted["ts"]) not in stub.messages

    eve = client.users_info(user=OTHER_WORKSPACE_USER)["user"]
    assert (eve["id"], eve["team_id"], eve["name"], eve["is_admin"], eve["tz"]) == (
        OTHER_WORKSPACE_USER, OTHER_TEAM, "eve", False, "UTC")
    assert client.users_info(user=ADMIN_USER)["user"]["name"] == "ada"
    with pytest.raises(SlackApiError, match="user_not_found"):
        client.users_info(user="UNOBODY01")


# ---------------------------------------------------------------------- failure injection


def test_server_error_then_success_with_retry_handler(stub: SlackStub):
    stub.fail_next("chat.postMessage", status=500)
    client = WebClient(token="xoxb-test", base_url=stub.api_url,
                       retry_handlers=[ServerErrorRetryHandler(max_retry_count=1, interval_calculator=FAST)])
    assert client.chat_postMessage(channel="C0INCIDENT", text="hi")["ok"]
    failed, ok = stub.api_calls("chat.postMessage")
    assert (failed.failed, failed.status, failed.response) == (True, 500, "Internal Server Error")
    assert (ok.failed, ok.status, ok.ok) == (False, 200, True)


def test_rate_limit_retry_after_is_honoured(stub: SlackStub):
    stub.fail_next("chat.postMessage", status=429, retry_after=1)
    client = WebClient(token="xoxb-test", base_url=stub.api_url,
                       retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    started = time.monotonic()
    assert client.chat_postMessage(channel="C0INCIDENT", text="hi")["ok"]
    assert time.monotonic() - started >= 1.0
    limited, ok = stub.api_calls("chat.postMessage")
    assert limited.status == 429 and limited.response == {"ok": False, "error": "ratelimited"}
    assert ok.ok and not ok.failed


def test_error_injection_is_consumed_in_order(stub: SlackStub, client: WebClient):
    stub.fail_next("users.info", error="ratelimited", times=2)
    stub.fail_next("users.info", error="user_not_found")
    for error in ("ratelimited", "ratelimited", "user_not_found"):
        with pytest.raises(SlackApiError) as err:
            client.users_info(user=ADMIN_USER)
        assert err.value.response.status_code == 200 and err.value.response["error"] == error
    assert client.users_info(user=ADMIN_USER)["ok"]
    assert [c.failed for c in stub.api_calls("users.info")] == [True, True, True, False]
    assert client.auth_test()["ok"]  # other methods were never affected


def test_delay_makes_a_short_client_timeout(stub: SlackStub):
    stub.fail_next("chat.postMessage", delay=2.0)
    client = WebClient(token="xoxb-test", base_url=stub.api_url, timeout=0.3)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(OSError):  # TimeoutError (urllib may wrap it in URLError)
        client.chat_postMessage(channel="C0INCIDENT", text="slow")
    assert time.monotonic() - started < 1.5
    call = stub.wait_for_api("chat.postMessage")
    assert call.delay == 2.0 and not call.failed  # handled (posted) after the delay, as on Slack
    stopping = time.monotonic()
    stub.stop()  # cuts the sleeping handler short
    assert time.monotonic() - stopping < 1.5


# ---------------------------------------------------------------------- response_url


def test_response_url_posts_are_recorded_per_thread(stub: SlackStub):
    url = stub.response_url("cmd")
    other = stub.response_url("cmd")
    assert url.startswith(f"http://127.0.0.1:{stub.port}/response/cmd-") and url != other
    hook = WebhookClient(url)
    first = hook.send(text="Key list", blocks=[section("k1")], response_type="ephemeral")
    assert first.status_code == 200 and json.loads(first.body) == {"ok": True}
    hook.send(text="Revoked", replace_original=True)
    assert [p["text"] for p in stub.responses_to(url)] == ["Key list", "Revoked"]
    assert stub.responses_to(other) == [] and stub.responses[url][0]["blocks"] == [section("k1")]
    assert stub.current_message(url)["text"] == "Revoked"
    hook.send_dict({"delete_original": True})
    assert stub.current_message(url) is None
    assert stub.wait_for_response(url)["text"] == "Key list"

    stub.fail_next("response", status=500)
    assert hook.send(text="lost").status_code == 500
    assert len(stub.responses_to(url)) == 3 and stub.calls[-1].failed
    assert WebhookClient(f"{stub.base_url}/response/forged-1").send(text="x").status_code == 404


def test_wait_for_wakes_up_on_a_call_from_another_thread(stub: SlackStub, client: WebClient):
    mark = stub.mark()
    timer = threading.Timer(0.1, lambda: client.chat_postMessage(channel="C0GENERAL", text="late"))
    timer.start()
    call = stub.wait_for(lambda c: c.body["channel"] == "C0GENERAL", timeout=3, since=mark)
    assert call.body["text"] == "late"
    timer.join()


def test_wait_for_reports_recent_calls_when_nothing_arrives(stub: SlackStub, client: WebClient):
    client.auth_test()
    started = time.monotonic()
    with pytest.raises(AssertionError) as err:
        stub.wait_for_api("chat.postMessage", timeout=0.2)
    assert time.monotonic() - started < 1
    message = str(err.value)
    assert "within 0.2s" in message and "chat.postMessage" in message
    assert "1 call(s) recorded" in message and "api POST auth.test -> 200" in message
    stub.clear()
    assert stub.calls == [] and "0 call(s) recorded." in _failure(lambda: stub.wait_for(bool, 0.05))
    with freeze_time("2024-01-01"):  # frozen clocks must not make waiting hang
        assert "within 0.05s" in _failure(lambda: stub.wait_for(bool, 0.05))


def _failure(fn) -> str:
    with pytest.raises(AssertionError) as err:
        fn()
    return str(err.value)


# ---------------------------------------------------------------------- Slack's limits


def plain(text: str) -> dict:
    return {"type": "plain_text", "text": text}


def mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def a_button(action_id: str = "go", text: str = "Go", value: str = "v", **extra) -> dict:
    return {"type": "button", "action_id": action_id, "text": plain(text), "value": value, **extra}


def an_option(i: int = 0, text: str | None = None, value: str | None = None) -> dict:
    return {"text": plain(text if text is not None else f"Option {i}"), "value": value if value is not None else str(i)}


def a_select(options: list[dict] | None = None, **extra) -> dict:
    options = options if options is not None else [an_option(0), an_option(1)]
    return {"type": "static_select", "action_id": "pick", "placeholder": plain("Choose"), "options": options, **extra}


def test_a_message_at_every_limit_passes():
    options = [an_option(i, text="o" * 75, value=f"{i:03d}".ljust(150, "v")) for i in range(100)]
    blocks = [
        section("s" * 3000) | {"block_id": "b" * 255, "accessory": a_button("a" * 255, "t" * 75, "v" * 2000)},
        {"type": "section", "fields": [mrkdwn("f" * 2000)] * 10},
        {"type": "context", "elements": [mrkdwn("c" * 3000)] * 10},
        {"type": "actions", "elements": [a_button(f"b{i}") for i in range(24)] + [a_select(options, initial_option=options[7])]},
        {"type": "header", "text": plain("h" * 150)},
        {"type": "divider"},
    ]
    # The same action_id in different blocks is fine (the key list has a Revoke button on every row).
    blocks += [section(f"row {i}") | {"block_id": f"row{i}", "accessory": a_button("apikeys.revoke")} for i in range(44)]
    assert len(blocks) == 50
    assert slack_limit_problems({"text": "t" * 4000, "blocks": blocks}) == []
    assert slack_limit_problems(blocks) == []
    assert slack_limit_problems({"text": "only text"}) == []


def _actions(*elements: dict) -> dict:
    return {"type": "actions", "elements": list(elements)}


OVER_THE_LIMIT = {
    "51 blocks": ([{"type": "divider"}] * 51, "blocks: 51 blocks, Slack allows 50"),
    "section text": ([section("s" * 3001)], "blocks[0].text: 3,001 characters, Slack allows 3,000"),
    "empty section text": ([section("")], "blocks[0].text: empty text"),
    "11 fields": ([{"type": "section", "fields": [mrkdwn("f")] * 11}], "blocks[0].fields: 11 fields, Slack allows 10"),
    "a long field": ([{"type": "section", "fields": [mrkdwn("f"), mrkdwn("f" * 2001)]}],
                     "blocks[0].fields[1]: 2,001 characters, Slack allows 2,000"),
    "11 context elements": ([{"type": "context", "elements": [mrkdwn("c")] * 11}],
                            "blocks[0].elements: 11 elements, Slack allows 10"),
    "26 actions elements": ([_actions(*[a_button(f"b{i}") for i in range(26)])],
                            "blocks[0].elements: 26 elements, Slack allows 25"),
    "button text": ([_actions(a_button(text="t" * 76))], "blocks[0].elements[0].text: 76 characters, Slack allows 75"),
    "empty button text": ([_actions(a_button(text=""))], "blocks[0].elements[0].text: empty text"),
    "button value": ([_actions(a_button(value="v" * 2001))],
                     "blocks[0].elements[0].value: 2,001 characters, Slack allows 2,000"),
    "button style": ([_actions(a_button(style="fancy"))], "blocks[0].elements[0].style: 'fancy' is not primary or danger"),
    "accessory button": ([section("x") | {"accessory": a_button(text="t" * 76)}],
                         "blocks[0].accessory.text: 76 characters, Slack allows 75"),
    "action_id": ([_actions(a_button("a" * 256))], "blocks[0].elements[0].action_id: 256 characters, Slack allows 255"),
    "action_id twice in a block": ([_actions(a_button("same"), a_button("same"))],
                                   "blocks[0].elements[1].action_id: 'same' is used twice in one block"),
    "block_id": ([section("x") | {"block_id": "b" * 256}], "blocks[0].block_id: 256 characters, Slack allows 255"),
    "block_id twice": ([section("x") | {"block_id": "b"}, section("y") | {"block_id": "b"}],
                       "blocks[1].block_id: 'b' is used twice in one message"),
    "101 options": ([_actions(a_select([an_option(i) for i in range(101)]))],
                    "blocks[0].elements[0].options: 101 options, Slack allows 100"),
    "option text": ([_actions(a_select([an_option(0, text="o" * 76)]))],
                    "blocks[0].elements[0].options[0].text: 76 characters, Slack allows 75"),
    "option value": ([_actions(a_select([an_option(0, value="v" * 151)]))],
                     "blocks[0].elements[0].options[0].value: 151 characters, Slack allows 150"),
    "initial option": ([_actions(a_select(initial_option=an_option(9)))],
                       "blocks[0].elements[0].initial_option: not one of the options"),
    "select placeholder": ([_actions(a_select(placeholder=plain("p" * 151)))],
                           "blocks[0].elements[0].placeholder: 151 characters, Slack allows 150"),
    "header text": ([{"type": "header", "text": plain("h" * 151)}], "blocks[0].text: 151 characters, Slack allows 150"),
    "message text": ({"text": "t" * 4001}, "text: 4,001 characters, Slack recommends at most 4,000 (and truncates at 40,000)"),
    "not blocks": ({"text": "x", "blocks": {"type": "divider"}}, "blocks: not a list of blocks"),
}


@pytest.mark.parametrize("case", list(OVER_THE_LIMIT))
def test_each_limit_is_caught(case):
    payload, problem = OVER_THE_LIMIT[case]
    problems = slack_limit_problems(payload)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    if isinstance(payload, list):  # the same, inside a message
        assert slack_limit_problems({"text": "fallback", "blocks": payload}) == problems


def test_the_stub_refuses_blocks_over_a_limit_like_slack_and_records_every_problem(stub: SlackStub, client: WebClient):
    too_long = [section("s" * 3001)]
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="x", blocks=too_long)
    assert err.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        client.chat_postEphemeral(channel="C0INCIDENT", user=MEMBER_USER, text="x", blocks=too_long)
    assert client.chat_postMessage(channel="C0INCIDENT", text="t" * 4001)["ok"]  # Slack truncates, not refuses
    url = stub.response_url("cmd")
    answer = WebhookClient(url).send(text="x", blocks=too_long)
    assert answer.status_code == 400 and json.loads(answer.body) == {"ok": False, "error": "invalid_blocks"}
    assert stub.responses_to(url) == [] and stub.current_message(url) is None
    assert stub.api_calls("chat.postMessage")[0].limit_problems == (
        "chat.postMessage: blocks[0].text: 3,001 characters, Slack allows 3,000",)
    path = url.removeprefix(stub.base_url)
    assert stub.limit_problems == [
        "chat.postMessage: blocks[0].text: 3,001 characters, Slack allows 3,000",
        "chat.postEphemeral: blocks[0].text: 3,001 characters, Slack allows 3,000",
        "chat.postMessage: text: 4,001 characters, Slack recommends at most 4,000 (and truncates at 40,000)",
        f"{path}: blocks[0].text: 3,001 characters, Slack allows 3,000",
    ]
    stub.clear()
    assert len(stub.limit_problems) == 4  # clear() does not hide them
    assert len(stub.take_limit_problems()) == 4 and stub.limit_problems == []
    with pytest.raises(AssertionError, match="broke its limits"):
        stub.check_limits("a test", {"blocks": [section("")]})
        assert_stub_within_limits(stub)
    assert stub.limit_problems == []  # the assertion took them


# ---------------------------------------------------------------------- SlackSender


def test_signed_headers_verify_and_follow_frozen_time(stub: SlackStub):
    sender = SlackSender("http://127.0.0.1:9", SECRET, stub)
    body = b"token=x&text=list"
    headers = sender.signed_headers(body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    wrong = sender.signed_headers(body, secret="other-secret")
    assert not verifier.is_valid(body, wrong["X-Slack-Request-Timestamp"], wrong["X-Slack-Signature"])
    with freeze_time("2024-01-01 00:00:00"):
        assert sender.signed_headers(body)["X-Slack-Request-Timestamp"] == "1704067200"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@pytest.fixture
def bolt(stub: SlackStub):
    """A real Bolt app talking to the stub, served on a local port; records raw requests."""
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    app = App(client=WebClient(token="xoxb-test", base_url=stub.api_url), signing_secret=SECRET)
    seen: dict[str, list] = {"raw": [], "commands": [], "actions": [], "events": []}

    @app.command("/apikeys")
    def on_command(ack, command, respond):
        ack()
        seen["commands"].append(command)
        respond(text="Keys", blocks=[
            section("key k1"),
            {"type": "actions", "block_id": "key:k1",
             "elements": [{"type": "button", "action_id": "revoke", "value": "k1",
                           "text": {"type": "plain_text", "text": "Revoke"}}]},
        ])

    @app.command("/toolong")
    def on_toolong(ack):
        ack(text="x", blocks=[section("s" * 3001)])

    @app.action("revoke")
    def on_revoke(ack, body, respond):
        ack()
        seen["actions"].append(body)
        respond(text=f"Revoked {body['actions'][0]['value']}", replace_original=True)

    @app.event("app_mention")
    def on_mention(event, client):
        seen["events"].append(event)
        client.chat_postMessage(channel=event["channel"], text="hello")

    handler = SlackRequestHandler(app)

    def wsgi(environ, start_response):
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        seen["raw"].append(({k: v for k, v in environ.items() if k.startswith("HTTP_")}, raw))
        environ["wsgi.input"] = io.BytesIO(raw)
        return handler(environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sender = SlackSender(f"http://127.0.0.1:{server.server_port}", SECRET, stub)
    yield sender, seen
    server.shutdown()
    server.server_close()


def test_command_and_button_click_through_a_bolt_app(stub: SlackStub, bolt):
    sender, seen = bolt
    assert stub.api_calls("auth.test")  # Bolt verified its token against the stub

    reply = sender.command("list", user=MEMBER_USER)
    assert reply.status == 200 and reply.response_url.startswith(stub.base_url + "/response/cmd-")
    fields = parse_qs(seen["raw"][-1][1].decode())
    assert list(fields) == ["token", "team_id", "team_domain", "channel_id", "channel_name", "user_id",
                            "user_name", "command", "text", "api_app_id", "is_enterprise_install",
                            "response_url", "trigger_id"]
    assert seen["commands"][-1]["user_name"] == "max" and seen["commands"][-1]["text"] == "list"
    shown = stub.wait_for_response(reply.response_url)
    assert [b["text"]["text"] for b in find_buttons(shown)] == ["Revoke"]
    assert button(shown, "Revoke")["value"] == "k1"
    with pytest.raises(AssertionError, match=r"no button with text 'Delete'; buttons shown: \['Revoke'\]"):
        button(shown, "Delete")

    click = sender.click_button(shown, "Revoke", response_url=reply.response_url, user=OTHER_WORKSPACE_USER)
    assert click.status == 200
    assert stub.wait_for(lambda c: c.url == reply.response_url and c.body["text"] == "Revoked k1")
    assert stub.current_message(reply.response_url)["text"] == "Revoked k1"
    payload = seen["actions"][-1]
    assert "message" not in payload and payload["container"]["is_ephemeral"] is True
    assert payload["user"] == {"id": OTHER_WORKSPACE_USER, "username": "eve", "name": "eve",
                               "team_id": OTHER_TEAM}
    assert payload["team"] == {"id": OWN_TEAM, "domain": "own"}
    assert payload["actions"][0] | {"action_ts": "-"} == {
        "action_id": "revoke", "block_id": "key:k1", "value": "k1", "type": "button",
        "text": {"type": "plain_text", "text": "Revoke", "emoji": True}, "action_ts": "-"}

    sender.click("revoke", "k2", ephemeral=False, message_blocks=shown["blocks"])
    assert seen["actions"][-1]["message"]["blocks"] == shown["blocks"]


def test_select_payload_shape(stub: SlackStub, bolt):
    sender, seen = bolt
    option = {"text": {"type": "plain_text", "text": "30 days"}, "value": "30"}
    sender.click("expiry", selected_option=option, state={"b": {"expiry": {"type": "static_select"}}})
    payload = json.loads(parse_qs(seen["raw"][-1][1].decode())["payload"][0])
    action = payload["actions"][0]
    assert action["type"] == "static_select" and action["selected_option"] == option
    assert "value" not in action and payload["state"]["values"]["b"]["expiry"]["type"] == "static_select"
    assert list(payload)[-3:] == ["state", "response_url", "actions"]


def test_events_and_bad_signatures_through_a_bolt_app(stub: SlackStub, bolt):
    sender, seen = bolt
    mention = {"type": "app_mention", "user": ADMIN_USER, "text": "<@UBOT00001> hi",
               "channel": "C0INCIDENT", "ts": "1700000001.000100", "event_ts": "1700000001.000100"}
    assert sender.event(mention).status == 200
    posted = stub.wait_for_api("chat.postMessage").body
    assert (posted["channel"], posted["text"]) == ("C0INCIDENT", "hello")
    retry = sender.event(mention, event_id="EvRETRY", retry_num=1)
    assert retry.status == 200 and retry.sent["event_id"] == "EvRETRY"
    headers, raw = seen["raw"][-1]
    assert headers["HTTP_X_SLACK_RETRY_NUM"] == "1" and headers["HTTP_X_SLACK_RETRY_REASON"] == "http_timeout"
    envelope = json.loads(raw)
    assert envelope["type"] == "event_callback" and envelope["authorizations"][0]["user_id"] == "UBOT00001"

    body = b"command=%2Fapikeys&text=list"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert sender.raw(body, form)[0] == 401
    assert sender.raw(body, {**form, **sender.signed_headers(body, secret="wrong")})[0] == 401
    stale = sender.signed_headers(body, timestamp=int(time.time()) - 600)
    assert sender.raw(body, {**form, **stale})[0] == 401
    challenge = json.dumps({"type": "url_verification", "challenge": "abc", "token": "t"}).encode()
    signed = {"Content-Type": "application/json", **sender.signed_headers(challenge)}
    status, headers, text = sender.raw(challenge, signed)
    assert status == 200 and json.loads(text) == {"challenge": "abc"}
    assert sender.url_verification("xyz").body == {"challenge": "xyz"}


def test_an_ack_over_a_limit_is_recorded(stub: SlackStub, bolt):
    sender, _ = bolt
    reply = sender.command("", command="/toolong")
    assert reply.status == 200 and len(reply.body["blocks"][0]["text"]["text"]) == 3001
    assert stub.take_limit_problems() == ["ack of /toolong: blocks[0].text: 3,001 characters, Slack allows 3,000"]


# ---------------------------------------------------------------------- the bot's own requests to Slack
#
# The real app in-process (one worker's WSGI app, tests/inprocess.py) talking to the stand-in, and an
# "attacker": a second local server on another address, which must never hear from the bot.


@pytest.fixture
def bot_app(database_url: str):
    from storage import open_store
    from tests.inprocess import SECRET as APP_SECRET
    from tests.inprocess import serve

    store = open_store(database_url, bootstrap_admins=[ADMIN_USER])
    with SlackStub() as slack, SlackStub(host="127.0.0.2") as attacker:
        served = serve(database_url, slack, APP_SECRET)
        sender = SlackSender(served.url, APP_SECRET, slack)
        try:
            yield SimpleNamespace(slack=slack, attacker=attacker, sender=sender, executor=served.executor, store=store)
        finally:
            served.close()
            store.close()
        assert_stub_within_limits(slack)
        assert attacker.calls == [], [summary(c) for c in attacker.calls]


def _show_list(bot, response_url: str):
    from bot.slack.ids import ActionId
    from bot.slack.values import encode

    reply = bot.sender.click(ActionId.SHOW_LIST.value, encode(ListView()), response_url=response_url)
    assert (reply.status, reply.text) == (200, "")
    bot.executor.wait_idle()  # the handler behind the ack has finished: whatever it sent, it sent


def test_a_click_whose_response_url_names_another_host_gets_no_post_there(bot_app, caplog):
    bot = bot_app
    evil = bot.attacker.response_url("evil") + "?token=s3cr3t-query"
    forged = [
        evil,                                                      # another host
        evil.replace("http://", "https://"),
        f"http://127.0.0.1:{bot.slack.port}@127.0.0.2:{bot.attacker.port}/response/evil-1",  # userinfo trick
        f"http://127.0.0.2:{bot.attacker.port}/response/evil-1#http://127.0.0.1:{bot.slack.port}/",
        "file:///etc/passwd",
    ]
    with caplog.at_level(logging.INFO, logger="apikeys.slack"):
        for url in forged:
            _show_list(bot, url)
    refused = [r.getMessage() for r in caplog.records if "event=reply_refused" in r.getMessage()]
    assert len(refused) == len(forged), refused
    assert all("s3cr3t" not in line and "/response/" not in line and "passwd" not in line for line in refused)
    assert any("127.0.0.2" in line for line in refused)
    # The stand-in's own response_urls (the host of SLACK_API_URL) are answered as before.
    thread = bot.slack.response_url("click")
    _show_list(bot, thread)
    assert "Active API keys" in json.dumps(bot.slack.responses_to(thread))


def test_a_redirect_from_a_response_url_is_not_followed(bot_app):
    bot = bot_app
    for status in (301, 302, 303, 307, 308):
        thread = bot.slack.response_url("click")
        bot.slack.fail_next("response", status=status, location=bot.attacker.response_url("evil"))
        _show_list(bot, thread)
        assert [c.status for c in bot.slack.calls if c.url == thread] == [status]  # once, not retried elsewhere
    # (the fixture checks that the attacker received nothing)


def test_the_web_api_client_follows_no_redirect(bot_app):
    from bot.config import Settings
    from bot.slack.app import make_client

    bot = bot_app
    client = make_client(Settings(slack_bot_token="xoxb-test", slack_api_url=bot.slack.api_url))
    bot.slack.fail_next("auth.test", location=bot.attacker.api_url + "auth.test")
    with pytest.raises(SlackApiError):
        client.auth_test()
    assert client.auth_test()["ok"]


def test_the_bot_sends_a_neutral_user_agent_everywhere(bot_app):
    """No Python version, no OS name: in response_url posts, and in the Web API calls of every client
    (Bolt's per-request client, the audit deliverer's)."""
    import platform

    from bot.slack import reply
    from bot.slack.ids import ActionId
    from bot.slack.values import KeyAction, encode

    bot = bot_app
    key = bot.store.keys.create(name="billing-api", owner="payments", actor="seed")[0].key
    thread = bot.slack.response_url("click")
    value = encode(KeyAction(key_id=key.id, view=ListView(), issued_at=int(time.time())))
    reply_ = bot.sender.click(ActionId.CONFIRM_REVOKE.value, value, user=ADMIN_USER, channel="C0INCIDENT",
                              response_url=thread)
    assert reply_.status == 200
    bot.slack.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == "C0AUDIT")   # the deliverer
    bot.slack.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == "C0INCIDENT")  # the notice
    bot.executor.wait_idle()
    seen = {(c.method_name, c.headers.get("user-agent")) for c in bot.slack.calls}
    assert {"auth.test", "chat.postMessage", "response"} <= {method for method, _ in seen}, seen
    assert {agent for _, agent in seen} == {reply.USER_AGENT}, seen
    for word in ("Python", "python", platform.system(), platform.release(), "slackclient"):
        assert word not in reply.USER_AGENT


@pytest.mark.parametrize("url, allowed", [
    ("https://hooks.slack.com/commands/T0OWN/123/abc", True),
    ("https://hooks.slack.com/actions/T0OWN/123/abc", True),
    ("https://HOOKS.SLACK.COM/actions/T0OWN/123/abc", True),
    ("https://hooks.slack.com:443/actions/T0OWN/123/abc", True),
    ("https://hooks.slack-gov.com/actions/T0OWN/123/abc", True),
    ("http://hooks.slack.com/actions/T0OWN/123/abc", False),       # https only
    ("https://hooks.slack.com:8443/actions/x", False),
    ("https://hooks.slack.com.evil.example/actions/x", False),
    ("https://evil.example/hooks.slack.com/actions/x", False),
    ("https://hooks.slack.com@evil.example/actions/x", False),
    ("https://evil.example@hooks.slack.com/actions/x", False),    # no userinfo at all
    ("https://hooks.slack.com./actions/x", False),
    ("https://hooks.slack.com\t.evil.example/x", False),          # whitespace and controls refused
    ("https://hooks.slack.com /x", False),
    ("https://hooks.sláck.com/x", False),
    ("https://slack.com/api/", True),                              # the host of SLACK_API_URL (the default)
    ("http://slack.com/api/", False),
    ("https://api.slack.com/x", False),
    ("ftp://hooks.slack.com/x", False),
    ("//hooks.slack.com/x", False),
    ("", False),
    (None, False),
    ({"url": "https://hooks.slack.com/x"}, False),
])
def test_which_response_urls_the_bot_answers(url, allowed):
    from bot.slack import reply

    assert reply.Replier("https://slack.com/api/").allowed(url) is allowed


def test_an_apps_own_api_host_is_allowed_for_that_app_only():
    """Each app owns the hosts it answers on: a second app (another SLACK_API_URL in the same process,
    as in the tests) never widens the first one's."""
    from bot.slack import reply

    local = reply.Replier("http://127.0.0.1:8765/api/")
    default = reply.Replier("https://slack.com/api/")
    assert local.allowed("http://127.0.0.1:8765/response/x") and not default.allowed("http://127.0.0.1:8765/response/x")
    assert not reply.SLACK_ONLY.allowed("https://slack.com/api/") and reply.SLACK_ONLY.allowed(
        "https://hooks.slack.com/actions/T/1/x")


def test_a_reply_masks_any_key_in_its_text(stub):
    """``Replier.send`` masks a full key in what it sends, whatever the caller put there."""
    from bot.slack import reply
    from storage.keyformat import generate_secret

    secret = generate_secret()
    url = stub.response_url("masked")
    mark = stub.mark()
    assert reply.Replier(stub.api_url).send(url, replace=False, text=f"the key {secret} leaked")
    sent = stub.wait_for_response(url, since=mark)
    assert secret not in json.dumps(sent) and secret[-4:] in sent["text"] and "leaked" in sent["text"]
