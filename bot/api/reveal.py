"""``/reveal/<token>``: the one-time page for a new secret (a rotation from Slack).

``GET`` is the page. It shows which key the link is for and a ``Show the key`` button; nothing is
consumed by opening it (a link preview or a mail scanner that fetches the URL takes nothing). The
button's script ``POST``s for the ciphertext, which the server hands out once and deletes in the same
transaction (``storage.reveals``), and decrypts it in the browser with WebCrypto (AES-GCM) under the
key in the link's ``#fragment``: the fragment is never sent to the server, so neither the server, its
logs nor its database ever see the secret or the key that opens it. A second visit says when the
link was viewed; an expired one says so.

The page runs only its own script (a Content-Security-Policy with the script's hash, no other
source), cannot be framed, sends no referrer and is never cached. The ``POST`` needs a header only
its own script sets (a cross-origin page cannot send it without a CORS preflight this server never
grants), and the token is 192 random bits: a hostile page can neither guess a link nor take one.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import TYPE_CHECKING

from storage.reveals import TOKEN_RE_PATTERN
from storage.timeutil import iso

from ..wsgi import STATUS_TEXT, HttpError, respond
from .routes import Route

if TYPE_CHECKING:
    from .app import KeyApiApp

TOKEN_RE = re.compile(rf"^/reveal/({TOKEN_RE_PATTERN})$")
OPEN_HEADER = "X-Apikeys-Reveal"

SCRIPT = """
const button = document.getElementById("show");
const out = document.getElementById("out");
const note = document.getElementById("note");
const fragment = location.hash.slice(1);
function b64(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  return Uint8Array.from(s, c => c.charCodeAt(0));
}
if (!fragment) {
  button.disabled = true;
  note.textContent = "This link is incomplete: the part after # is missing. Open the whole link from Slack.";
}
button.addEventListener("click", async () => {
  button.disabled = true;
  let key;
  try {  // the key first: a link cut short must not use up the only copy
    const raw = b64(fragment);
    if (raw.length !== 32) throw new Error("length");
    key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
  } catch (error) {
    note.textContent = "This link is damaged: the part after # was cut short or changed. Nothing was used up: " +
                       "open the whole link from Slack.";
    return;
  }
  note.textContent = "Opening…";
  try {
    const answer = await fetch(location.pathname, {method: "POST", headers: {"X-Apikeys-Reveal": "1"},
                                                   cache: "no-store", credentials: "omit"});
    const body = await answer.json();
    if (!answer.ok) { note.textContent = body.error; return; }
    const raw = b64(body.ciphertext);
    const plain = await crypto.subtle.decrypt({name: "AES-GCM", iv: raw.slice(0, 12)}, key, raw.slice(12));
    out.textContent = new TextDecoder().decode(plain);
    out.hidden = false;
    history.replaceState(null, "", location.pathname);
    note.textContent = "Copy it into your secret store now: this page will not show it again.";
  } catch (error) {
    note.textContent = "The key could not be opened here (" + error.name + "). " +
                       "The link is used up: ask an admin to rotate the key again.";
  }
});
"""
STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1d1c1d}"
         "code,pre{font-family:ui-monospace,monospace}pre{background:#f4f4f4;padding:1rem;overflow-wrap:anywhere;"
         "white-space:pre-wrap;user-select:all}button{font-size:1rem;padding:.5rem 1rem}")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


CSP = (f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                ("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer"),
                ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY")]


def _page(start_response, status: int, title: str, body: str, script: bool = False) -> list[bytes]:
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=robots content=noindex>"
            f"<meta name=viewport content='width=device-width'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            + (f"<script>{SCRIPT}</script>" if script else "") + "</body></html>").encode("utf-8")
    start_response(STATUS_TEXT[status], [*PAGE_HEADERS, ("Content-Length", str(len(page)))])
    return [page]


def _token(environ: dict) -> str:
    match = TOKEN_RE.match(environ.get("PATH_INFO") or "")
    if match is None:
        raise HttpError(404, "no such link")
    return match.group(1)


def _gone(opened) -> str:
    if opened.state == "viewed":
        return (f"This link was opened at {iso(opened.viewed_at)} and shows its key only once. If that was not you, "
                "revoke the key now.")
    return "This link has expired (links are valid for 15 minutes). Ask an admin to rotate the key again."


def reveal(app: KeyApiApp, environ: dict, start_response) -> list[bytes]:
    method = environ.get("REQUEST_METHOD", "GET").upper()
    try:
        token = _token(environ)
    except HttpError:
        if method == "POST":
            raise
        return _page(start_response, 404, "No such link", "<p>This link is not one apikeys made, or it was cut short.</p>")
    if method == "POST":
        if environ.get("HTTP_" + OPEN_HEADER.upper().replace("-", "_")) != "1":
            raise HttpError(403, f"open the link in a browser (the page's own script sends {OPEN_HEADER})")
        opened = app.store.reveals.open(token)
        if opened.state == "opened":
            return respond(start_response, 200, {"ciphertext": opened.ciphertext, "name": opened.key_name,
                                                 "key": opened.key_masked})
        if opened.state == "unknown":
            raise HttpError(404, "no such link")
        raise HttpError(410, _gone(opened))
    opened = app.store.reveals.look(token)
    if opened.state == "unknown":
        return _page(start_response, 404, "No such link", "<p>This link is not one apikeys made, or it was cut short.</p>")
    what = (f"<p>The new API key <b>{html.escape(opened.key_name or '')}</b> "
            f"<code>{html.escape(opened.key_masked or '')}</code>.</p>")
    if opened.state != "sealed":
        return _page(start_response, 410, "Link used up", what + f"<p>{html.escape(_gone(opened))}</p>")
    return _page(start_response, 200, "Your new API key", what + (
        "<p>It is shown once: opening it uses up this link. Have your secret store ready.</p>"
        "<p><button id=show>Show the key</button></p><pre id=out hidden></pre><p id=note></p>"), script=True)


ROUTES = [Route("/reveal", ("GET", "HEAD", "POST"), reveal, "reveal", prefix=True,
                undocumented="a page for people (the one-time link to a rotated key's new secret), not the API")]
