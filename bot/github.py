"""GitHub secret scanning partner alerts: ``POST /v1/secret-scanning/github``.

When one of our keys is pushed somewhere public (a repository, a gist, an issue, an npm package),
GitHub POSTs a JSON array of matches, ``[{"token", "type", "url", "source"}, …]``, signed with
ECDSA (NIST P-256, SHA-256) over the raw body: ``Github-Public-Key-Signature`` is the base64 of the
DER signature, ``Github-Public-Key-Identifier`` names the key among those published at
``APIKEYS_GITHUB_KEYS_URL`` (``{"public_keys": [{"key_identifier", "key", "is_current"}]}``).

Those keys are fetched when first needed and cached; an identifier we do not know makes us fetch
them again (GitHub rotated a key in), at most once a minute whatever arrives, so a stream of forged
identifiers cannot make us hammer GitHub. The fetch runs on a thread of its own, never under a lock
a request waits on: a request waits for it at most ``FETCH_WAIT`` seconds, then answers 503 (GitHub
retries), so a slow GitHub cannot tie up the threads that answer ``/v1/auth``. Nothing is parsed
before the signature is verified.

The matches go to ``storage.leaks`` (one transaction for the alert); the answer is GitHub's
feedback array, ``[{"token_hash", "token_type", "label"}]``: a token is named by its SHA-256,
never echoed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from storage import Store
from storage.leaks import GITHUB_ACTOR, Finding, LeakPolicy, Match
from storage.revocation import Via
from storage.timeutil import utcnow

from .config import DEFAULT_GITHUB_KEYS_URL as DEFAULT_KEYS_URL
from .logs import fields
from .outbound import USER_AGENT, open_url

log = logging.getLogger("apikeys.github")

ALERT_PATH = "/v1/secret-scanning/github"
MAX_ALERT_BODY = 1024 * 1024
REFETCH_INTERVAL = timedelta(minutes=1)
FETCH_TIMEOUT = 5.0
FETCH_WAIT = 0.25  # seconds a request waits for a fetch under way before it answers 503 (Retry-After)
MAX_KEYS_DOCUMENT = 256 * 1024
MAX_IDENTIFIER = 256
LOGGED_KEYS = 20  # per alert, one line per key found, up to this many


class AlertRefused(Exception):
    """The alert is not handled: ``status`` (400, 401, 503) and a message safe to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def fetch_keys_document(url: str) -> bytes:
    """GitHub's public keys document (at most ``MAX_KEYS_DOCUMENT`` bytes; redirects not followed)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
    with open_url(request, timeout=FETCH_TIMEOUT) as response:  # the keys come from the configured URL only
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return response.read(MAX_KEYS_DOCUMENT + 1)[:MAX_KEYS_DOCUMENT + 1]


def parse_keys_document(data: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """Identifier -> P-256 public key; entries that are not such a key are skipped."""
    if len(data) > MAX_KEYS_DOCUMENT:
        raise ValueError("the public keys document is too large")
    document = json.loads(data.decode("utf-8"))
    entries = document.get("public_keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError('no "public_keys" array')
    keys = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        identifier, pem = entry.get("key_identifier"), entry.get("key")
        if not isinstance(identifier, str) or not isinstance(pem, str):
            continue
        try:
            key = serialization.load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys[identifier] = key
    return keys


class GitHubKeys:
    """GitHub's signing keys, cached; fetched again for an unknown identifier at most once a minute."""

    def __init__(self, url: str = DEFAULT_KEYS_URL, *, fetch: Callable[[str], bytes] = fetch_keys_document,
                 interval: timedelta = REFETCH_INTERVAL, wait: float = FETCH_WAIT):
        self.url = url
        self._fetch = fetch
        self.interval = interval
        self.wait = wait
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._fetched_at: datetime | None = None  # the last attempt, successful or not
        self._lock = threading.Lock()  # guards the fields above; never held while fetching
        self._fetching: threading.Event | None = None  # set when the fetch under way is done
        self._failed = False  # the last fetch failed

    def get(self, identifier: str) -> ec.EllipticCurvePublicKey | None:
        """The key, or None when GitHub does not publish it. OSError: the keys could not be fetched
        (or not within ``wait`` seconds: the fetch goes on, and a later request finds its answer)."""
        with self._lock:
            key = self._keys.get(identifier)
            if key is not None:
                return key
            done = self._fetching
            if done is None:
                now = utcnow()
                if self._fetched_at is not None and now - self._fetched_at < self.interval:
                    return None  # asked again too soon: the answer would be the same (or cost GitHub a request)
                self._fetched_at = now
                done = self._fetching = threading.Event()
                threading.Thread(target=self._fetch_in_background, args=(done,), name="github-keys",
                                 daemon=True).start()
        if not done.wait(self.wait):
            raise OSError("GitHub's public keys are still being fetched")
        with self._lock:
            if self._failed:
                raise OSError("GitHub's public keys could not be fetched")
            return self._keys.get(identifier)

    def _fetch_in_background(self, done: threading.Event) -> None:
        try:
            keys = parse_keys_document(self._fetch(self.url))
        except Exception as exc:  # unreachable, not 200, not the document we expect
            log.warning(fields(event="github_keys", outcome="fetch_failed", url=self.url, error=type(exc).__name__))
            with self._lock:
                self._failed, self._fetching = True, None
        else:
            log.info(fields(event="github_keys", outcome="fetched", keys=len(keys)))
            with self._lock:
                self._keys, self._failed, self._fetching = keys, False, None
        done.set()


def _header_text(value: str | None, what: str) -> str:
    if not value or not value.strip():
        raise AlertRefused(401, f"missing {what} header: alerts must be signed by GitHub")
    value = value.strip()
    if len(value) > MAX_IDENTIFIER * 4 or not value.isascii() or not value.isprintable():
        raise AlertRefused(401, f"invalid {what} header")
    return value


def check_signature(keys: GitHubKeys, body: bytes, identifier: str | None, signature: str | None) -> None:
    """Raises AlertRefused unless ``body`` is signed by the GitHub key named ``identifier``."""
    identifier = _header_text(identifier, "Github-Public-Key-Identifier")
    signature = _header_text(signature, "Github-Public-Key-Signature")
    if len(identifier) > MAX_IDENTIFIER:
        raise AlertRefused(401, "invalid Github-Public-Key-Identifier header")
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise AlertRefused(401, "the signature is not base64") from None
    try:
        key = keys.get(identifier)
    except OSError:
        raise AlertRefused(503, "GitHub's public keys could not be fetched to check the signature; try again") from None
    if key is None:
        raise AlertRefused(401, "unknown Github-Public-Key-Identifier: no such key is published by GitHub")
    try:
        key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise AlertRefused(401, "the signature does not match the body") from None


BODY_SHAPE = 'the body must be a JSON array of {"token", "type", "url", "source"} objects'


def parse_alert(body: bytes) -> list[Match]:
    """The matches of a (verified) alert; AlertRefused(400) when it is not GitHub's shape."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AlertRefused(400, f"the body is not JSON: {BODY_SHAPE}") from None
    if not isinstance(value, list):
        raise AlertRefused(400, BODY_SHAPE)
    matches = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise AlertRefused(400, f'every match needs a string "token": {BODY_SHAPE}')
        for name in ("type", "url", "source"):
            if item.get(name) is not None and not isinstance(item[name], str):
                raise AlertRefused(400, f'"{name}" must be a string: {BODY_SHAPE}')
        matches.append(Match(token=item["token"], type=item.get("type") or "", url=item.get("url") or "",
                             source=item.get("source") or ""))
    return matches


def feedback(findings: list[Finding]) -> list[dict[str, str]]:
    """GitHub's feedback format, by hash (no token is echoed)."""
    return [{"token_hash": f.token_hash, "token_type": f.token_type, "label": f.label} for f in findings]


class GitHubAlerts:
    """What the route does with one request: verify, parse, report, answer."""

    def __init__(self, keys: GitHubKeys, policy: LeakPolicy | str = LeakPolicy.REVOKE):
        self.keys = keys
        self.policy = LeakPolicy(policy)

    def handle(self, store: Store, body: bytes, identifier: str | None, signature: str | None) -> list[dict[str, str]]:
        check_signature(self.keys, body, identifier, signature)
        matches = parse_alert(body)
        findings = store.leaks.report(matches, actor=GITHUB_ACTOR, policy=self.policy, via=Via.GITHUB)
        ours = [f for f in findings if f.ours]
        recorded = [f for f in ours if f.recorded]
        for f in recorded[:LOGGED_KEYS]:  # the audit log has every one; the log names the first few
            log.warning(fields(event="key_leaked_public", key_id=f.key.id, status=f.status.value,
                               revoked=f.revoked_now, policy=self.policy.value))
        if len(recorded) > LOGGED_KEYS:
            log.warning(fields(event="key_leaked_public", more=len(recorded) - LOGGED_KEYS,
                               see="apikeys audit export"))
        log.info(fields(event="github_alert", matches=len(findings), ours=len(ours),
                        new=len(recorded), revoked=sum(1 for f in ours if f.revoked_now)))
        return feedback(findings)
