"""Take the README's and docs' screenshots of the playground again, from the real playground.

Run it after a change to what the playground shows (a post, a card, the page):

    .venv/bin/python tools/screenshots.py [--out docs]

It starts `apikeys playground` on a fresh SQLite database in a temporary directory, drives it in
headless Chromium (Debian's chromium and chromium-driver, as the browser tests use) and writes
playground-list.png (/apikeys), playground-confirm.png (Revoke: the confirmation) and
playground-revoked.png (Revoke Key: the result card, the channel notice and the audit channel's post
with its witness line). Everything it started is stopped, and the directory removed, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bot.playground.launch import running

ROOT = Path(__file__).resolve().parent.parent
WINDOW = (1440, 900)  # headless Chromium's viewport is then 1440 x 757, the PNGs' size
WITNESS_RE = re.compile(r"#\d+ · [0-9a-f]{12}…")  # bot/witness.py's witness_text(): `#<id> · <hash prefix>…`


@contextlib.contextmanager
def playground(workdir: Path):
    """The playground's URL while it runs, on a fresh database in ``workdir``; stopped on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "APIKEYS_")) and k != "DATABASE_URL"}
    env["DATABASE_URL"] = f"sqlite:///{workdir}/pg.db"
    with running(workdir, env) as started:
        yield started.url


@contextlib.contextmanager
def browser(workdir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={workdir / 'chrome'}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def take(driver, url: str, out: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def wait(predicate, what: str):
        def check(d):
            try:
                return predicate(d)
            except StaleElementReferenceException:  # re-rendered under us: look again
                return False
        WebDriverWait(driver, 15, poll_frequency=0.1).until(check, message=f"waiting for {what}")

    def buttons(label: str):
        return [b for b in driver.find_elements(By.CSS_SELECTOR, "#channel button.bk") if b.text == label]

    def pane(name: str) -> str:
        return driver.find_element(By.ID, name).text

    def shot(name: str) -> None:
        # no caret or focus ring; then two animation frames: what was just rendered has been painted
        driver.execute_async_script("document.activeElement.blur();"
                                    "requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
        driver.save_screenshot(str(out / name))
        print(f"wrote {out / name}")

    driver.get(url + "/playground")
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#user option"), "the page")
    box = driver.find_element(By.ID, "composer")
    box.send_keys("/apikeys")
    box.send_keys(Keys.ENTER)
    wait(lambda d: buttons("Revoke") and "Active API keys" in pane("channel"), "the key list")
    driver.execute_script("document.getElementById('channel').scrollTop = 0")  # the list from its heading
    shot("playground-list.png")

    buttons("Revoke")[0].click()
    wait(lambda d: buttons("Cancel Revoke Key") and buttons("Revoke Key"), "the confirmation")
    Select(driver.find_element(By.CSS_SELECTOR, "#channel select.bk")).select_by_visible_text("Compromised")
    wait(lambda d: Select(d.find_element(By.CSS_SELECTOR, "#channel select.bk")).first_selected_option.text
         == "Compromised", "the reason chosen")
    shot("playground-confirm.png")

    buttons("Revoke Key")[0].click()
    wait(lambda d: "Revoked" in pane("channel") and "was revoked by" in pane("channel"),
         "the result card and the channel notice")
    wait(lambda d: "Key revoked" in pane("audit") and WITNESS_RE.search(pane("audit").split("Key revoked")[-1]),
         "the audit channel's post with its witness line")
    shot("playground-revoked.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="apikeys-screenshots-"))
    try:
        with playground(workdir) as url, browser(workdir) as driver:
            take(driver, url, args.out.resolve())
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
