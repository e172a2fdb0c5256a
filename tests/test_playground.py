"""The playground end to end, in a real headless browser (Debian's chromium + chromedriver via
Selenium): the page sends every command and click as a signed request to the real /slack/events.

Skipped, with the reason, where no browser is installed (.ci/run installs one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from bot.playground.launch import running
from storage import open_store

from .helpers import ROOT, free_port

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="no headless browser: apt-get install chromium chromium-driver"
)


@pytest.fixture
def playground(database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["DATABASE_URL"] = database_url
    with running(tmp_path, env) as started:
        yield started.url


def listening_ports(port: int) -> set[int]:
    """The TCP ports on 127.0.0.1 that the process listening on ``port`` listens on (the stand-in's is
    one of them: what an attacker's page would find by scanning)."""
    lines = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    pids = {part.split("pid=")[1].split(",")[0] for line in lines if f":{port} " in line
            for part in line.split("users:")[1:] if "pid=" in part}
    found = set()
    for line in lines:
        if any(f"pid={pid}," in line for pid in pids):
            found.add(int(line.split()[3].rsplit(":", 1)[1]))
    return found


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1500,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver, predicate, what: str, timeout: float = 15):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:  # the page re-rendered under us: look again
            return False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, message=f"waiting for {what}")


def buttons(driver, label: str, pane: str = "channel"):
    from selenium.webdriver.common.by import By

    return [b for b in driver.find_elements(By.CSS_SELECTOR, f"#{pane} button.bk") if b.text == label]


def pane_text(driver, pane: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, pane).text


def send(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "composer")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def switch_user(driver, user_id: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "user")).select_by_value(user_id)


def test_list_cancel_revoke_with_reason_and_a_member_refused(playground, browser, database_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(playground + "/playground")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the user switch")

    # ada (admin) lists the keys.
    send(browser, "/apikeys")
    wait(browser, lambda d: len(buttons(d, "Revoke")) == 11, "the list with 11 Revoke buttons")
    assert "Active API keys" in pane_text(browser, "channel")
    assert "Only visible to you" in pane_text(browser, "channel")

    # Revoke → the confirmation replaces the list in place; Cancel → back to the list.
    buttons(browser, "Revoke")[0].click()
    wait(browser, lambda d: buttons(d, "Cancel Revoke Key") and buttons(d, "Revoke Key"), "the confirmation")
    assert not buttons(browser, "Revoke"), "the list was not replaced in place"
    assert "danger" in buttons(browser, "Revoke Key")[0].get_attribute("class")
    name = browser.find_element(By.CSS_SELECTOR, "#channel .fields").text.split("\n")[1]
    buttons(browser, "Cancel Revoke Key")[0].click()
    wait(browser, lambda d: len(buttons(d, "Revoke")) == 11, "the list again")

    # Revoke again, choose a reason, Revoke Key.
    buttons(browser, "Revoke")[0].click()
    wait(browser, lambda d: buttons(d, "Revoke Key"), "the confirmation again")
    Select(browser.find_element(By.CSS_SELECTOR, "#channel select.bk")).select_by_visible_text("Compromised")
    buttons(browser, "Revoke Key")[0].click()
    wait(browser, lambda d: "Revoked" in pane_text(d, "channel") and "Compromised" in pane_text(d, "channel"),
         "the result card")
    wait(browser, lambda d: "Key revoked" in pane_text(d, "audit") and name in pane_text(d, "audit"),
         "the audit channel post")
    assert "Compromised" in pane_text(browser, "audit")

    store = open_store(database_url)
    revoked = store.keys.list_keys(status="revoked", limit=10).items
    assert name in [k.name for k in revoked]
    assert next(k for k in revoked if k.name == name).revoke_reason == "compromised"

    # max (a member) tries: refused, with the reason, and nothing changes.
    switch_user(browser, "UMEMBER01")
    wait(browser, lambda d: not buttons(d, "Revoke Key") and "Revoked" not in pane_text(d, "channel"),
         "max's view without ada's private messages")
    send(browser, "/apikeys")
    wait(browser, lambda d: "Active API keys" in pane_text(d, "channel"), "max's list")
    assert not buttons(browser, "Revoke") and not buttons(browser, "Rotate"), "a member is shown buttons that change"
    send(browser, "/apikeys revoke-owner payments")
    wait(browser, lambda d: "Only apikeys admins" in pane_text(d, "channel") and "@ada" in pane_text(d, "channel"),
         "the refusal, naming the admin to ask")
    assert store.keys.count_keys(status="revoked") == 2  # the demo's revoked key and ada's
    wait(browser, lambda d: "Command refused" in pane_text(d, "audit"), "the refusal in the audit channel")
    store.close()

    ARTIFACTS.mkdir(exist_ok=True)
    switch_user(browser, "UADMIN001")
    wait(browser, lambda d: "Compromised" in pane_text(d, "channel"), "ada's view")
    browser.save_screenshot(str(ARTIFACTS / "playground.png"))
    assert (ARTIFACTS / "playground.png").stat().st_size > 10_000


def test_rotate_in_the_playground_and_open_the_new_key_once_through_its_link(playground, browser, database_url):
    """Rotate from the list, the owner's channel told, then the one-time link opened in the browser:
    the page decrypts the key (WebCrypto, the key in the #fragment), the key verifies VALID, and a
    second visit shows nothing."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(playground + "/playground")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the page")
    send(browser, "/apikeys owner payments")
    wait(browser, lambda d: len(buttons(d, "Rotate")) == 3, "the payments keys with Rotate")
    buttons(browser, "Rotate")[0].click()
    wait(browser, lambda d: buttons(d, "Cancel Rotate Key") and buttons(d, "Rotate Key"), "the rotation confirmation")
    def grace():
        return Select(browser.find_element(By.CSS_SELECTOR, "#channel select.bk"))

    wait(browser, lambda d: [o.text for o in grace().options][1:] == ["now", "1 hour", "24 hours", "7 days"]
         and grace().first_selected_option.text == "24 hours", "the grace choices, 24 hours preselected")
    wait(browser, lambda d: grace().select_by_visible_text("1 hour") or grace().first_selected_option.text == "1 hour",
         "1 hour chosen")
    browser.find_element(By.CSS_SELECTOR, "#channel input.bk").send_keys("INC-42: moving to the vault")
    buttons(browser, "Rotate Key")[0].click()
    wait(browser, lambda d: d.find_elements(By.LINK_TEXT, "Open the new key"), "the result with the one-time link")
    link = browser.find_element(By.LINK_TEXT, "Open the new key").get_attribute("href")
    assert "/reveal/" in link and "#" in link
    wait(browser, lambda d: "Key rotated" in pane_text(d, "audit"), "the audit post")
    wait(browser, lambda d: "was rotated" in pane_text(d, "owners") and "@ada" in pane_text(d, "owners"),
         "the post in the owner's channel")

    store = open_store(database_url)
    [rotated] = [k for k in store.keys.list_keys(status="active", owner="payments", limit=10).items if k.rotated_to]
    [entry] = [e for e in store.audit.recent(limit=50) if e.action == "key.rotated"]
    details = json.loads(entry.details)
    assert details["grace"] == "1 hour" and details["note"] == "INC-42: moving to the vault"

    browser.get(link[:-6])  # a link cut short: said so, and nothing is used up
    wait(browser, lambda d: d.find_elements(By.ID, "show"), "the reveal page")
    browser.find_element(By.ID, "show").click()
    wait(browser, lambda d: "damaged" in d.find_element(By.ID, "note").text, "the damaged link, told")
    browser.get("about:blank")
    browser.get(link)
    wait(browser, lambda d: d.find_elements(By.ID, "show"), "the reveal page")
    assert "shown once" in browser.find_element(By.TAG_NAME, "body").text
    browser.find_element(By.ID, "show").click()
    wait(browser, lambda d: d.find_element(By.ID, "out").text.startswith("apk_"), "the decrypted key")
    secret = browser.find_element(By.ID, "out").text
    assert "#" not in browser.current_url, "the fragment stays in the address bar"
    result = store.keys.verify(secret)
    assert result.code.value == "VALID" and result.key_id == rotated.rotated_to

    browser.get("about:blank")  # else the same URL but for its #fragment is not loaded again
    browser.get(link)
    wait(browser, lambda d: "Link used up" in d.find_element(By.TAG_NAME, "body").text, "the second visit")
    assert secret not in browser.page_source and not browser.find_elements(By.ID, "show")
    assert "secret_revealed" in " ".join(e.action for e in store.audit.recent(limit=50))
    store.close()


def test_leak_watch_in_the_playground(playground, browser, database_url):
    from selenium.webdriver.common.by import By

    store = open_store(database_url)
    demo = store.keys.create(name="pasted-by-mistake", owner="search", actor="test")[0]
    store.close()
    browser.get(playground + "/playground")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the page")
    send(browser, f"here is the key: {demo.secret}")
    wait(browser, lambda d: "contains the API key" in pane_text(d, "channel"), "the leak warning in the thread")
    assert demo.secret[4:] not in pane_text(browser, "audit")
    wait(browser, lambda d: "Key leaked" in pane_text(d, "audit"), "the audit channel alert")



def hostile_site(page: bytes):
    """Another site the operator visits, on another localhost port, serving ``page`` (stop it with
    ``shutdown()``)."""
    import http.server
    import threading

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    return evil


def test_markup_in_any_text_is_shown_as_text_and_never_runs(playground, browser):
    """What the bot says (here: a query echoed back) and what a user says are text, not markup."""
    from selenium.webdriver.common.by import By

    browser.get(playground + "/playground")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the page")
    attack = '<img src=x onerror="window.pwned=1"><b id=injected>bold</b>'
    send(browser, f"/apikeys find {attack}")
    send(browser, f"hello {attack}")
    # Raw markup in a message the page renders (as a message posted through the stand-in would be):
    # unclosed, so that an HTML parser would finish the tag; in every place a text is shown.
    raw = "raw <img src=x onerror=window.pwned=1 //"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": raw},
               "fields": [{"type": "mrkdwn", "text": "`" + raw + "`"}, {"type": "plain_text", "text": raw}]},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": "*" + raw + "*"}]},
              {"type": "header", "text": {"type": "plain_text", "text": raw}},
              {"type": "actions", "elements": [{"type": "static_select", "action_id": "x",
                                                "placeholder": {"type": "plain_text", "text": raw},
                                                "options": [{"text": {"type": "plain_text", "text": raw}, "value": "v"}]}]}]
    message = {"id": 99999, "author": "bot", "at": 1700000000, "channel": "C0INCIDENT", "text": raw, "blocks": blocks}
    rendered = browser.execute_script(
        "const box = document.createElement('div'); box.id = 'probe'; document.body.appendChild(box);"
        "box.appendChild(renderMessage(arguments[0]));"
        "return [box.textContent, box.querySelectorAll('img, script, b#injected').length];", message)
    assert rendered[0].count("raw <img src=x onerror") >= 5 and rendered[1] == 0, rendered
    time.sleep(0.3)  # an image's onerror would fire once its load failed
    wait(browser, lambda d: "<img src=x" in pane_text(d, "channel"), "the query echoed as text")
    wait(browser, lambda d: "hello" in pane_text(d, "channel"), "the user's message")
    assert browser.find_elements(By.CSS_SELECTOR, "#channel img, #channel #injected, #channel script") == []
    assert browser.execute_script("return window.pwned === undefined")


def test_a_page_on_another_origin_cannot_drive_the_playground_or_its_stand_in(playground, browser, database_url,
                                                                             tmp_path):
    """The attack as reviewed: a web page the operator visits posts a message through the Slack
    stand-in (well-known token, no origin check) whose markup then runs in the playground's origin,
    and calls the playground's API. Every request is refused and nothing changes."""
    import json
    from urllib.parse import urlsplit

    from selenium.webdriver.common.by import By

    port = urlsplit(playground).port
    stand_ins = sorted(listening_ports(port) - {port})
    assert stand_ins, "the stand-in's port was not found"
    payload = "&".join(f"{k}={v}" for k, v in {
        "token": "xoxb-playground", "channel": "C0INCIDENT",
        "text": "%3Cimg%20src%3Dx%20onerror%3D%22fetch('/playground/api/command',{method:'POST',headers:"
                "{'Content-Type':'application/json'},body:JSON.stringify({user:'UADMIN001',command:'/apikeys',"
                "text:'admins add <@UEVIL0001>'})})%22%3E"}.items())
    calls = [f"fetch('http://127.0.0.1:{p}/api/chat.postMessage',{{method:'POST',mode:'no-cors',headers:"
             f"{{'Content-Type':'application/x-www-form-urlencoded'}},body:{json.dumps(payload)}}})" for p in stand_ins]
    calls += [f"new Image().src={json.dumps(f'http://127.0.0.1:{p}/api/chat.postMessage?{payload}')}" for p in stand_ins]
    calls.append(f"fetch('{playground}/playground/api/command',{{method:'POST',mode:'no-cors',headers:{{'Content-Type':"
                 "'text/plain'},body:JSON.stringify({user:'UADMIN001',command:'/apikeys',text:'admins add <@UEVIL0001>'})})")
    # Clicks on the operator's open list (the attacker guessing the ids: the test gives them away), as a
    # simple no-cors post and as a JSON post in cors mode (whose preflight the playground never grants).
    store = open_store(database_url)
    target = store.keys.list_keys(status="active", limit=1).items[0].id
    store.close()
    from bot.slack.ids import ActionId

    for message_id in range(1, 6):
        click = json.dumps({"user": "UADMIN001", "message_id": message_id, "action_id": ActionId.CONFIRM_REVOKE.value,
                            "value": str(target), "block_id": "b", "state": {}})
        for mode, content_type in (("no-cors", "text/plain"), ("cors", "application/json")):
            calls.append(f"fetch('{playground}/playground/api/click',{{method:'POST',mode:'{mode}',headers:"
                         f"{{'Content-Type':'{content_type}'}},body:{json.dumps(click)}}}).catch(() => 0)")
    page = f"<html><body><script>{';'.join(calls)};document.title='sent'</script></body></html>".encode()

    evil = hostile_site(page)
    try:
        browser.get(playground + "/playground")  # the operator has the playground open, a list on it ...
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the page")
        send(browser, "/apikeys")
        wait(browser, lambda d: len(buttons(d, "Revoke")) == 11, "the list")
        browser.switch_to.new_window("tab")
        browser.get(f"http://localhost:{evil.server_address[1]}/")  # ... and visits another site
        wait(browser, lambda d: d.title == "sent", "the attack to be sent")
        time.sleep(1.5)  # the playground page polls every second: let it render whatever arrived
        browser.switch_to.window(browser.window_handles[0])
        state = json.loads(urllib.request.urlopen(playground + "/playground/api/state").read())
        assert not any("onerror" in json.dumps(m) for m in state["messages"])
        assert browser.execute_script("return window.pwned === undefined")
        assert browser.find_elements(By.CSS_SELECTOR, "#channel img, #audit img") == []
        store = open_store(database_url)
        try:
            assert "UEVIL0001" not in {a.user_id for a in store.admins.list()}
            assert not any(e.action == "admin.added" for e in store.audit.oldest_first())
            assert [k.name for k in store.keys.list_keys(status="revoked", limit=10).items] == ["deploy-bot"]
            assert not any(e.action in ("key.revoked", "key.revoke_denied") and e.key_id == target
                           for e in store.audit.oldest_first())
        finally:
            store.close()
    finally:
        evil.shutdown()


def test_the_pages_policy_runs_its_own_script_only(playground, browser):
    """Defence in depth behind rendering text as text: the page's Content-Security-Policy lets only its
    own script run (by hash), so markup that ever reached the DOM could not run an inline handler or a
    script of its own."""
    from selenium.webdriver.common.by import By

    browser.get(playground + "/playground")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the page (its own script runs)")
    browser.execute_script(
        "const img = document.createElement('img'); img.setAttribute('onerror', 'window.pwned = 1'); img.src = 'x';"
        "document.body.appendChild(img);"
        "const script = document.createElement('script'); script.textContent = 'window.pwned = 2';"
        "document.body.appendChild(script);")
    time.sleep(0.5)  # the image's load fails at once; its handler would have run by now
    assert browser.execute_script("return window.pwned === undefined")
    send(browser, "/apikeys help")  # and the page still works
    wait(browser, lambda d: "/apikeys" in pane_text(d, "channel"), "the help")


def test_a_page_on_another_origin_cannot_post_through_a_stand_in_even_with_its_token(browser):
    """The stand-in's own guard, in a real browser: a hostile page that knows the token (the playground's is
    made for the run; this stand-in's is known) still gets nothing recorded, whatever a page can send
    without asking: a form post, a no-cors fetch (form-encoded, text/plain, a Blob without a type), an
    image's GET."""
    import json

    from bot.playground.slackstub import SlackStub

    stub = SlackStub(bot_token="xoxb-known-to-the-page").start()
    post = f"{stub.api_url}chat.postMessage"
    body = "token=xoxb-known-to-the-page&channel=C0INCIDENT&text=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
    script = ";".join([
        f"fetch({json.dumps(post)},{{method:'POST',mode:'no-cors',headers:{{'Content-Type':"
        f"'application/x-www-form-urlencoded'}},body:{json.dumps(body)}}})",
        f"fetch({json.dumps(post)},{{method:'POST',mode:'no-cors',headers:{{'Content-Type':'text/plain'}},"
        f"body:{json.dumps(body)}}})",
        f"fetch({json.dumps(post)},{{method:'POST',mode:'no-cors',body:new Blob([{json.dumps(body)}])}})",
        f"new Image().src = {json.dumps(post + '?' + body)}",
        "setTimeout(() => document.forms[0].submit(), 1000)",  # the fetches have gone by then
    ])
    fields = "".join(f'<input type=hidden name="{k}" value="{v}">' for k, v in
                     (pair.split("=", 1) for pair in body.replace("%3C", "<").replace("%3E", ">")
                      .replace("%20", " ").replace("%3D", "=").replace("<", "&lt;").split("&")))
    page = (f'<html><body><form method=POST action="{post}">{fields}</form>'
            f"<script>{script}</script></body></html>").encode()

    evil = hostile_site(page)
    try:
        browser.get(f"http://localhost:{evil.server_address[1]}/")
        wait(browser, lambda d: d.current_url.startswith(stub.base_url), "the form post, sent last, to arrive")
        assert "refused" in browser.page_source  # the stand-in's JSON error, as the browser shows it
        assert stub.calls == [] and stub.messages == {}
    finally:
        evil.shutdown()
        stub.stop()


BROWSER_WORDS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write")


def test_no_page_of_the_bot_parses_a_string_as_markup():
    """The page builds every text as DOM text; none of these appears in any HTML or JavaScript of bot/."""
    files = sorted([*(ROOT / "bot").rglob("*.html"), *(ROOT / "bot").rglob("*.js")])
    assert files, "no page found"
    hits = [f"{path.relative_to(ROOT)}: {word}" for path in files for word in BROWSER_WORDS
            if word in path.read_text()]
    assert not hits, hits
