"""Leaks reported from outside Slack: GitHub secret scanning (our keys found in public repositories,
gists, issues, npm packages), or an operator or another scanner through ``apikeys leak report``.

One call handles one report (one alert, however many matches it holds) in one write transaction:

* each token is checked against our format and checksum first: a look-alike never reaches the
  database, and a report holding only look-alikes opens no transaction at all;
* the well-formed ones are looked up by digest (the only thing stored of a secret);
* each (key, where it was found) is handled once: a receipt per pair, in the same transaction, so a
  retried alert (GitHub resends what it could not deliver) changes nothing and records nothing new;
* with the ``revoke`` policy an active key is revoked at once (the conditional UPDATE every
  revocation uses, reason ``compromised``), and its ``key.leaked`` entry (where it was found) and its
  ``key.revoked`` entry are appended together: one action, so one audit-channel post per report.
  With ``alert`` the key is only reported.

No token is ever stored, logged or returned: what comes back names a token by its SHA-256
(``token_hash``, GitHub's feedback format) and a key by its id and masked form.
"""

from __future__ import annotations

import enum
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from . import keyformat
from .audit import Action, AuditLog, EventInput
from .db import Database
from .keys import KeyService, check_actor
from .models import ApiKey, KeyStatus, RevokeReason
from .redaction import redact
from .revocation import Revocation, Via
from .timeutil import utcnow

GITHUB_ACTOR = "github-secret-scanning"  # the contract's actor for what GitHub's reports do
MAX_URL = 2000
MAX_LABEL = 100  # a token's type or source
LOOKUP_CHUNK = 500


class LeakPolicy(str, enum.Enum):
    REVOKE = "revoke"  # a valid key found in public is revoked at once
    ALERT = "alert"    # it is only reported (the audit channel offers Revoke)


@dataclass(frozen=True)
class Match:
    """One token as a scanner reported it (the secret itself is never kept past the call)."""

    token: str
    type: str = ""
    url: str = ""
    source: str = ""

    def __repr__(self) -> str:  # never the token
        return f"Match(type={self.type!r}, url={self.url!r}, source={self.source!r})"


@dataclass(frozen=True)
class Finding:
    """What became of one match: ``ours`` is GitHub's ``true_positive``."""

    token_hash: str          # SHA-256 (hex) of the token as reported
    token_type: str
    ours: bool               # a key we issued, whatever its status
    key: ApiKey | None = None
    status: KeyStatus | None = None   # the key's status when the report arrived
    recorded: bool = False   # a new report: a key.leaked entry was written
    revoked_now: bool = False

    @property
    def label(self) -> str:
        return "true_positive" if self.ours else "false_positive"


def _clean(value: object, limit: int) -> str:
    """Free text from a scanner, as stored: a string, control characters dropped, keys masked, cut."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch for ch in value if not unicodedata.category(ch).startswith("C")).strip()
    return redact(text)[:limit]


def _token_hash(token: object) -> str:
    """SHA-256 of a reported token as it was sent: a lone surrogate (valid JSON, never one of our keys)
    is hashed as its UTF-8 bytes would be, instead of failing the whole report."""
    if not isinstance(token, str):
        return ""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class LeakService:
    def __init__(self, db: Database, audit: AuditLog, keys: KeyService):
        self.db = db
        self.audit = audit
        self.keys = keys

    def report(self, matches: Sequence[Match], *, actor: str, policy: LeakPolicy | str = LeakPolicy.REVOKE,
               via: Via | str) -> list[Finding]:
        """Handle one report: a finding per match, in order (see the module's docstring)."""
        actor = check_actor(actor)
        policy = LeakPolicy(policy)
        via = Via(via)
        compromised = Revocation.of(actor=actor, via=via, reason=RevokeReason.COMPROMISED)
        hashes = [_token_hash(m.token) for m in matches]
        types = [_clean(m.type, MAX_LABEL) for m in matches]
        # The format and the checksum first: only well-formed tokens are looked up.
        wanted = sorted({h for m, h in zip(matches, hashes, strict=True) if keyformat.is_well_formed(m.token)})
        if not wanted:
            return [Finding(h, t, False) for h, t in zip(hashes, types, strict=True)]
        with self.db.write() as session:
            now = utcnow()
            found: dict[str, ApiKey] = {}  # digest -> key
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                query = select(ApiKey).where(ApiKey.digest.in_(wanted[start:start + LOOKUP_CHUNK])).order_by(ApiKey.id)
                if self.db.dialect == "postgresql":
                    query = query.with_for_update()  # in id order, the order batch revocations lock in
                found.update((key.digest, key) for key in session.scalars(query))
            statuses = {h: key.status_at(now) for h, key in found.items()}
            # Each (key, where it was found) once: a retried alert finds its receipts.
            places: dict[str, int] = {}
            wheres: dict[int, dict[str, str]] = {}
            for i, (match, h) in enumerate(zip(matches, hashes, strict=True)):
                if h in found:
                    wheres[i] = {"url": _clean(match.url, MAX_URL), "source": _clean(match.source, MAX_LABEL),
                                 "type": types[i], "via": via.value}
                    places.setdefault(f"public-leak|{found[h].id}|{wheres[i]['url']}|{wheres[i]['source']}", i)
            new = self.audit.receipts.first_uses(list(places), session) if places else set()
            fresh = sorted(places[identity] for identity in new)  # the matches reported for the first time
            revoked: set[str] = set()
            if policy is LeakPolicy.REVOKE:
                active = [found[hashes[i]].id for i in fresh if statuses[hashes[i]] is KeyStatus.ACTIVE]
                if active:
                    revoked = self.keys.revoke_active_in(session, active, compromised, now=now)
            revoking: dict[str, int] = {}  # key id -> the match whose entry records the revocation
            for i in fresh:
                if found[hashes[i]].id in revoked:
                    revoking.setdefault(found[hashes[i]].id, i)
            events: list[EventInput] = []
            for i in fresh:
                key = found[hashes[i]]
                revokes = revoking.get(key.id) == i
                events.append(EventInput(actor=actor, action=Action.KEY_LEAKED, key_id=key.id, details={
                    "name": key.name, "key": key.masked, "owner": key.owner, "status": statuses[hashes[i]].value,
                    "policy": policy.value, "revoked": revokes, **wheres[i]}))
                if revokes:
                    events.append(compromised.entry(key, **wheres[i]))
            self.audit.append_many(session, events, at=now)
        recorded = set(fresh)
        results = []
        for i, (h, t) in enumerate(zip(hashes, types, strict=True)):
            key = found.get(h)
            if key is None:
                results.append(Finding(h, t, False))
            else:
                results.append(Finding(h, t, True, key=key, status=statuses[h], recorded=i in recorded,
                                       revoked_now=revoking.get(key.id) == i))
        return results
