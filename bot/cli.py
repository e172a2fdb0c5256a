"""The ``apikeys`` command line: operators' and break-glass access to the key store.

Exit codes: 0 success, 1 a negative answer (e.g. ``verify`` of an invalid key, a broken
audit chain), 2 usage or input error. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

from storage import (
    InvalidInput,
    RevokeReason,
    StorageError,
    Store,
    Via,
    checkpoints,
    grants,
    integrity,
    migrate,
    open_store,
)
from storage.audit import AUDIT_TOPIC, SERVER_AUDIT_CHANNEL, event_to_dict
from storage.errors import CorruptEntry
from storage.keyformat import TOKEN_PREFIX, find_keys_in_text, is_well_formed
from storage.keys import KeyService, key_to_dict
from storage.leaks import Match
from storage.redaction import looks_like_key, redact
from storage.timeutil import iso, parse_duration, utcnow

from .config import ConfigError, Settings, load_dotenv_file

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE = 0, 1, 2
DEFAULT_SIGNING_KEY_FILE = "apikeys-audit-signing-key.pem"
FOLLOW_POLL = 1.0  # seconds between looks for new entries in 'audit export --follow'
FOLLOW_STEPS = 10


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr and exit code 2, and a command's help ends with
    its examples (``epilog``, printed as written)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _count(text: str) -> int:
    """A flag's whole number of at least 1, checked before the database is opened."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _entry_id(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be an entry id (0 or more), got {text!r}")
    return int(text)


def _duration(text: str):
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scopes(text: str):
    from storage.tokens import check_scopes

    try:
        return check_scopes(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _token_id(text: str):
    from storage.tokens import check_token_id

    try:
        return check_token_id(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grace(text: str):
    """``now`` (or 0), a Slack choice (``24 hours``) or a duration (``90m``, ``2d``), at most 30 days."""
    from storage.rotation import parse_grace

    try:
        return parse_grace(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _channel(text: str) -> str:
    from storage.owners import check_channel

    try:
        return check_channel(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apikeys-bot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli:unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="apikeys", description="Manage, verify and revoke API keys.", epilog=_examples(
        "apikeys create --name billing-api --owner payments --expires-in 90d",
        "apikeys list --status all",
        "apikeys revoke key_3hX9bQ2mZ7pL4tV8w --actor alice --reason compromised",
        "apikeys revoke - --actor alice --reason compromised   # then paste the leaked key",
        "apikeys audit --verify --public-key audit-public.pem",
        "apikeys COMMAND --help"))
    parser.add_argument("--version", action="version", version=f"apikeys {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("create", help="create a key and print its secret once", epilog=_examples(
        "apikeys create --name billing-api --owner payments --expires-in 90d",
        "apikeys create --name ci --owner platform --json",
        "apikeys create --name fleet --owner iot --count 100 > fleet.json"))
    p.add_argument("--name", required=True, help="what the key is for")
    p.add_argument("--owner", required=True, help="team or person responsible (e.g. payments-team)")
    p.add_argument("--expires-in", metavar="DURATION", type=_duration, help="lifetime such as 90d, 12h, 30m")
    p.add_argument("--count", type=_count, metavar="N", help="create N keys named NAME-1..NAME-N (JSON output)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("list", help="list keys (never their secrets)", epilog=_examples(
        "apikeys list", "apikeys list --status revoked --owner payments", "apikeys list --status all --json"))
    p.add_argument("--status", default="active", choices=["active", "revoked", "expired", "all"])
    p.add_argument("--owner")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("revoke", help="revoke a key permanently (break-glass path when Slack is down)", epilog=_examples(
        "apikeys revoke key_3hX9bQ2mZ7pL4tV8w --actor alice --reason compromised",
        "apikeys revoke - --actor alice --reason compromised --note 'pasted in #general'   # paste the key itself",
        "apikeys list --owner payments   # to find a key's id"))
    p.add_argument("key_id", metavar="KEY_ID|KEY|-",
                   help="the key's id, the key itself, or - to read the key (or id) from standard input")
    p.add_argument("--actor", required=True, metavar="WHO", help="who is revoking (name, email or Slack user ID)")
    p.add_argument("--reason", choices=[r.value for r in RevokeReason])
    p.add_argument("--note", metavar="TEXT")
    p.add_argument("--json", action="store_true", help="print the key as it is now and whether this revoked it")

    p = sub.add_parser("verify", help="check a key you hold; exit 0 when VALID, 1 otherwise",
                       description="Check a key you hold. It is recorded as an operator's check (key.checked in\n"
                       "the audit log), never as a use: no last use, and no 'revoked key still in use'\n"
                       "alert for a revoked key. Exit 0 when VALID, 1 otherwise.", epilog=_examples(
        "apikeys verify -   # then paste the key", "apikeys verify - --json < key.txt"))
    p.add_argument("key", metavar="KEY|-", help="the key, or - to read it from standard input")
    p.add_argument("--json", action="store_true", help="print the code, and the key's id, name, owner and expiry")

    p = sub.add_parser("leak", help="a leak found by hand or by another scanner", epilog=_examples(
        "apikeys leak report - --url https://gist.example.com/abc --source 'manual review'"))
    leak = p.add_subparsers(dest="leak_command", metavar="report", parser_class=_Parser)
    leak.required = True
    q = leak.add_parser("report", help="report a key found where it should not be (revoked at once under the "
                                       "revoke policy, APIKEYS_PUBLIC_LEAK_ACTION)", epilog=_examples(
        "apikeys leak report - --url https://gist.example.com/abc   # then paste the key"))
    q.add_argument("key", metavar="KEY", help="the key, or - to read it from standard input")
    q.add_argument("--url", default="", help="where it was found (a public URL)")
    q.add_argument("--source", default="manual", metavar="TEXT", help="what found it, or where (default: manual)")
    q.add_argument("--json", action="store_true", help="print whether it is ours, the key, and what was done")

    p = sub.add_parser("audit", help="the audit log, oldest first; its verification, signing key and export",
                       epilog=_examples("apikeys audit --limit 20", "apikeys audit --verify --public-key audit-public.pem",
                                        "apikeys audit --verify --against-slack", "apikeys audit keygen --out signing.pem",
                                        "apikeys audit export --since 1000 --follow"))
    p.add_argument("--json", action="store_true",
                   help="print JSON: every field, each entry's time as its hash covers it (as 'audit export' writes it)")
    p.add_argument("--limit", type=_count, metavar="N", help="only the newest N entries")
    p.add_argument("--verify", action="store_true",
                   help="check the hash chain and the signed checkpoints; exit 1 at the first that does not agree")
    p.add_argument("--public-key", metavar="FILE",
                   help="with --verify: the checkpoints must be signed by this key (PEM, as keygen prints it)")
    p.add_argument("--against-slack", action="store_true",
                   help="with --verify: also compare every position the audit channel witnessed")
    audit = p.add_subparsers(dest="audit_command", metavar="keygen|export", parser_class=_Parser)
    q = audit.add_parser("keygen", help="make an audit signing key; prints its public key", epilog=_examples(
        "apikeys audit keygen --out /etc/apikeys/signing.pem > audit-public.pem"))
    q.add_argument("--out", metavar="FILE", default=DEFAULT_SIGNING_KEY_FILE,
                   help=f"write the private key here (mode 0600; never overwritten; default {DEFAULT_SIGNING_KEY_FILE})")
    q = audit.add_parser("export", help="the log as JSON lines (entry, hash, covering checkpoint), for a SIEM",
                         epilog=_examples("apikeys audit export > audit.jsonl",
                                          "apikeys audit export --since 1000 --follow | your-siem-shipper"))
    q.add_argument("--since", type=_entry_id, default=0, metavar="ID", help="only entries after this id (resume)")
    q.add_argument("--follow", action="store_true", help="keep streaming new entries until interrupted")

    p = sub.add_parser("playground", help="the real bot with a local stand-in for Slack, in your browser",
                       epilog=_examples("apikeys playground", "apikeys playground --port 3001"))
    p.add_argument("--host", default="127.0.0.1", help="where to listen (default 127.0.0.1; HOST is ignored)")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--allow-existing-database", action="store_true",
                   help="run on DATABASE_URL even though it holds data the playground did not create "
                        "(keys, admins, audit entries, any row)")

    p = sub.add_parser("db", help="database schema, guards and privileges", epilog=_examples(
        "apikeys db status", "apikeys db upgrade   # as the owning role: DATABASE_MIGRATION_URL, else DATABASE_URL",
        "apikeys db grant apikeys_runtime"))
    db = p.add_subparsers(dest="db_command", metavar="upgrade|status|grant", parser_class=_Parser)
    db.required = True
    db.add_parser("upgrade", help="apply schema migrations as the owning role (DATABASE_MIGRATION_URL, else "
                                  "DATABASE_URL); the server also does this at start")
    q = db.add_parser("status", help="the schema revision and the permanence triggers (exit 1 when one is missing or "
                                     "disabled)")
    q.add_argument("--json", action="store_true")
    q = db.add_parser("grant", help="PostgreSQL: give a runtime role exactly what the server needs (no DDL, no "
                                    "TRUNCATE, no trigger changes); run as the owner")
    q.add_argument("role", metavar="ROLE", help="an existing login role that does not own the tables")

    p = sub.add_parser("rotate", help="replace a key: a new key now, the old one ends after a grace period",
                       epilog=_examples(
                           "apikeys rotate key_3hX9bQ2mZ7pL4tV8w --actor alice   # the old key works 24 more hours",
                           "apikeys rotate key_3hX9bQ2mZ7pL4tV8w --actor alice --grace 1h --json",
                           "apikeys rotate - --actor alice --grace now   # paste the leaked key; it stops at once"))
    p.add_argument("key_id", metavar="KEY_ID|KEY|-",
                   help="the key's id, the key itself, or - to read the key (or id) from standard input")
    p.add_argument("--actor", required=True, metavar="WHO", help="who is rotating (name, email or Slack user ID)")
    p.add_argument("--grace", type=_grace, default="24 hours", metavar="DURATION",
                   help="how long the old key keeps working: now, 1h, 24h (the default), 7d, … up to 30d")
    p.add_argument("--note", metavar="TEXT")
    p.add_argument("--json", action="store_true", help="print the old key, the new key (with its secret) and the grace")

    p = sub.add_parser("owners", help="owners' channels: where an owner's people are told about their keys",
                       epilog=_examples("apikeys owners set payments-team --channel C012AB3CD --actor alice",
                                        "apikeys owners list", "apikeys owners remove payments-team --actor alice"))
    owners = p.add_subparsers(dest="owners_command", metavar="set|list|remove", parser_class=_Parser)
    owners.required = True
    q = owners.add_parser("set", help="tell OWNER's channel when one of its keys is revoked, rotated, leaked, "
                          "used after revocation or about to expire (audited)")
    q.add_argument("owner", metavar="OWNER")
    q.add_argument("--channel", required=True, type=_channel, metavar="CHANNEL_ID", help="like C012AB3CD (invite the bot)")
    q.add_argument("--actor", default=None, help="who is doing this (default: cli:<login>)")
    q = owners.add_parser("list", help="list owners' channels")
    q.add_argument("--json", action="store_true")
    q = owners.add_parser("remove", help="stop telling OWNER's channel (audited)")
    q.add_argument("owner", metavar="OWNER")
    q.add_argument("--actor", default=None, help="who is doing this (default: cli:<login>)")

    p = sub.add_parser("notify", help="send notices now", epilog=_examples("apikeys notify expiring"))
    notify = p.add_subparsers(dest="notify_command", metavar="expiring", parser_class=_Parser)
    notify.required = True
    notify.add_parser("expiring", help="the expiry digest now: keys ending within 14, 3 or 1 days, each told once "
                      "per threshold (the server also sends it daily at APIKEYS_EXPIRY_DIGEST_HOUR)")

    p = sub.add_parser("tokens", help="admin tokens for the management API (apkt_…): created, listed, revoked here only",
                       epilog=_examples(
                           "apikeys tokens create --name terraform --scope keys:read,keys:write --expires-in 90d "
                           "--actor alice",
                           "apikeys tokens list", "apikeys tokens revoke tok_3hX9bQ2mZ7pL4tV8w --actor alice"))
    tokens = p.add_subparsers(dest="tokens_command", metavar="create|list|revoke", parser_class=_Parser)
    tokens.required = True
    q = tokens.add_parser("create", help="a new admin token, printed once on stdout (audited)", epilog=_examples(
        "apikeys tokens create --name ci-deploy --scope keys:read,keys:revoke --actor alice",
        "apikeys tokens create --name terraform --scope keys:read,keys:write --expires-in 30d --actor alice --json"))
    q.add_argument("--name", required=True, help="letters, digits and . _ - ; the audit log names it token:NAME")
    q.add_argument("--scope", required=True, metavar="SCOPE[,SCOPE]", type=_scopes,
                   help="keys:read (list, get), keys:write (create, rotate), keys:revoke")
    q.add_argument("--expires-in", metavar="DURATION", type=_duration, help="lifetime such as 30d (default 90d, at "
                   "most 366d)")
    q.add_argument("--actor", required=True, help="who is creating it")
    q.add_argument("--json", action="store_true", help="print id, name, scopes, token and expiry as JSON")
    q = tokens.add_parser("list", help="tokens, never their secrets")
    q.add_argument("--json", action="store_true")
    q = tokens.add_parser("revoke", help="revoke a token for good (audited)")
    q.add_argument("token_id", metavar="TOKEN_ID", type=_token_id, help="like tok_3hX9bQ2mZ7pL4tV8w ('tokens list')")
    q.add_argument("--actor", required=True, help="who is revoking it")

    p = sub.add_parser("admins", help="who holds the admin role", epilog=_examples(
        "apikeys admins list", "apikeys admins add U012AB3CD --actor alice", "apikeys admins remove U012AB3CD"))
    admins = p.add_subparsers(dest="admins_command", metavar="list|add|remove", parser_class=_Parser)
    admins.required = True
    q = admins.add_parser("list", help="list admins")
    q.add_argument("--json", action="store_true")
    for verb in ("add", "remove"):
        q = admins.add_parser(verb, help=f"{verb} an admin (audited)")
        q.add_argument("user_id", metavar="USER_ID", help="Slack user ID, like U012AB3CD")
        q.add_argument("--actor", default=None, help="who is doing this (default: cli:<login>)")
    return parser


# -- output ---------------------------------------------------------------------------------
def _json(out: TextIO, value: Any) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


def _table(out: TextIO, header: Sequence[str], rows: list[Sequence[str]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in [header, *rows]:
        out.write("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _json_array(out: TextIO, items: Sequence[Any]) -> None:
    """A JSON array with one compact object per line: the C encoder (``indent`` would take the
    pure-Python one, the slowest part of printing 50,000 new keys)."""
    if not items:
        out.write("[]\n")
        return
    out.write("[\n  " + ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]\n")


PROGRESS_DELAY = 0.5  # seconds a step runs before its bar shows: quick commands stay quiet


class _Progress:
    """A progress bar on stderr when it is a terminal (tqdm), and nothing at all when it is not
    (piped, redirected, a test): call it with (done, total). The bar starts at the first call, and
    shows once the work has taken PROGRESS_DELAY."""

    def __init__(self, err: TextIO | None, desc: str, unit: str):
        isatty = getattr(err, "isatty", None)  # None: no bar wherever it is run
        self._on = callable(isatty) and bool(isatty())
        self._err, self._desc, self._unit = err, desc, unit
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self._on:
            return
        if self._bar is None:
            from tqdm import tqdm  # only for a terminal

            self._bar = tqdm(total=total, desc=self._desc, unit=f" {self._unit}", file=self._err, delay=PROGRESS_DELAY,
                             leave=False, dynamic_ncols=True)
        elif self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description(text)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


# -- commands -------------------------------------------------------------------------------
def cmd_create(store: Store, args, out: TextIO, err: TextIO) -> int:
    expires_in = args.expires_in
    bar = _Progress(err if args.count is not None else None, "making keys", "keys")

    def progress(made: int, total: int) -> None:
        bar(made, total)
        if made == total:
            bar.describe("writing them and their audit entries")

    if args.count is None:
        same = store.keys.active_named(args.owner.strip(), args.name.strip())
        if same:
            err.write(f"apikeys: warning: {args.owner.strip()} already has an active key named {args.name.strip()!r} "
                      f"({', '.join(k.id for k in same[:3])}{', …' if len(same) > 3 else ''}); creating another "
                      "(a name that says what each is for tells them apart in a breach)\n")
    with bar:
        created = store.keys.create(name=args.name, owner=args.owner, actor=_cli_actor(), expires_in=expires_in,
                                    count=args.count, progress=progress)
    if args.count is not None:
        _json_array(out, [c.shown() for c in created])
    elif args.json:
        _json(out, created[0].shown())
    else:
        c = created[0]
        out.write(f"Created {c.key.id} ({c.key.name}, owner {c.key.owner}"
                  f"{', expires ' + iso(c.key.expires_at) if c.key.expires_at else ''}).\n")
        out.write("Copy the key now; it is shown only once:\n")
        out.write(c.secret + "\n")
    return EXIT_OK


def _iter_keys(keys: KeyService, status: str, owner: str | None):
    cursor = None
    while True:
        page = keys.list_keys(status=status, owner=owner, limit=500, after=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def cmd_list(store: Store, args, out: TextIO, err: TextIO) -> int:
    now = utcnow()
    keys = _iter_keys(store.keys, args.status, args.owner)
    if args.json:
        _json(out, [key_to_dict(k, now) for k in keys])
        return EXIT_OK
    if args.status == "revoked":  # when, by whom and why
        header = ("ID", "NAME", "OWNER", "KEY", "REVOKED", "BY", "REASON")
        rows = [(k.id, k.name, k.owner, k.masked, iso(k.revoked_at), k.revoked_by, k.revoke_reason or "-") for k in keys]
    else:
        header = ("ID", "NAME", "OWNER", "KEY", "STATUS", "CREATED", "EXPIRES", "LAST USED")
        rows = [(k.id, k.name, k.owner, k.masked, k.status_at(now).value, iso(k.created_at),
                 iso(k.expires_at) or "-", iso(k.last_used_at) or "never") for k in keys]
    if not rows:
        which = f"{args.status} " if args.status != "all" else ""
        out.write(f"No {which}keys{' for ' + args.owner if args.owner else ''}.\n")
        return EXIT_OK
    _table(out, header, rows)
    return EXIT_OK


def _key_to_revoke(store: Store, given: str, err: TextIO, verb: str = "revoke") -> str:
    """The id of the key to revoke (or rotate): ``given`` is its id, the key itself, or ``-`` (either, on stdin).
    The likeliest input in a breach is the leaked key itself: it is looked up by digest, and no
    message ever repeats it."""
    on_stdin = given == "-"
    if on_stdin:
        given = sys.stdin.readline().strip()
        if not given:
            raise UsageError("nothing on standard input (paste the key or its id)")
    _not_a_token(given)
    if not looks_like_key(given):
        return given.strip()
    found = find_keys_in_text(given)  # the key inside quotes, 'Bearer …', 'API_KEY=…', a pasted line
    if len(found) > 1:
        raise UsageError(f"that holds {len(found)} keys; {verb} them one at a time; nothing changed")
    if not found:
        raise UsageError("that looks like one of our keys, but its checksum does not match (a typo, or a "
                         "truncated copy?); nothing changed")
    given = found[0]
    key = store.keys.find_by_secret(given)
    if key is None:
        raise UsageError("that is one of our keys in shape, but no key we issued; nothing changed")
    if not on_stdin:
        err.write("apikeys: warning: the key is now in your shell history and visible in 'ps' (once it is "
                  f"{verb}d, that matters less); next time use 'apikeys {verb} -' and paste it on standard input\n")
    return key.id


def cmd_revoke(store: Store, args, out: TextIO, err: TextIO) -> int:
    key_id = _key_to_revoke(store, args.key_id, err)
    outcome = store.keys.revoke(
        key_id, actor=args.actor, via=Via.CLI, reason=args.reason, note=args.note
    )
    key = outcome.key
    if args.json:
        _json(out, {"key": key_to_dict(key), "revoked_now": outcome.revoked_now})
    elif outcome.revoked_now:
        why = f", reason {key.revoke_reason}" if key.revoke_reason else ""
        out.write(f"Revoked {key.id} ({key.name}, {key.masked}, owner {key.owner}){why}. This cannot be undone.\n")
    else:
        out.write(f"{key.id} ({key.name}, {key.masked}) was already revoked at {iso(key.revoked_at)} "
                  f"by {key.revoked_by}; nothing changed.\n")
    if outcome.revoked_now:
        _audit_post_queued(store, None if args.json else out, err)
    return EXIT_OK


STUCK_AFTER = timedelta(minutes=2)  # a running server delivers a post within seconds


def _audit_post_queued(store: Store, out: TextIO | None, err: TextIO) -> None:
    """Say that the audit-channel post of what was just done waits in the outbox for a server to
    deliver it (this command never talks to Slack), and warn when nothing seems to deliver it."""
    channel = store.audit.notify_channel
    where = "the audit channel" if channel == SERVER_AUDIT_CHANNEL else channel
    last, waiting, since = store.outbox.delivery_state(AUDIT_TOPIC, stuck_after=STUCK_AFTER)
    if out is not None:
        out.write(f"Its post to {where} is queued; a running server delivers it"
                  f"{f' (last delivery {iso(last)})' if last else ''}.\n")
    if last is None:
        err.write("apikeys: warning: no server has delivered a Slack post from this database yet, so the post waits "
                  "until one runs with SLACK_BOT_TOKEN and APIKEYS_AUDIT_CHANNEL; tell the audit channel yourself\n")
    elif waiting:
        posts = f"{waiting} post{'s have' if waiting != 1 else ' has'}"
        err.write(f"apikeys: warning: {posts} been waiting since {iso(since)}: no server is delivering "
                  "them (not running, or Slack refuses it; see its log), and this one waits with them; tell the audit "
                  "channel yourself\n")


def cmd_rotate(store: Store, args, out: TextIO, err: TextIO) -> int:
    from storage.rotation import grace_label

    key_id = _key_to_revoke(store, args.key_id, err, verb="rotate")
    rotated = store.keys.rotate(key_id, actor=args.actor, via=Via.CLI, grace=args.grace, note=args.note)
    old, new = rotated.old, rotated.new
    if args.json:
        _json(out, {"old": key_to_dict(old, utcnow()), "new": new.shown(), "grace": grace_label(rotated.grace),
                    "old_ends_at": iso(old.revoked_at or old.expires_at)})
        _audit_post_queued(store, None, err)
        return EXIT_OK
    ends = ("was revoked at once (reason rotation)" if old.revoked_at is not None
            else f"keeps working until {iso(old.expires_at)} ({grace_label(rotated.grace)})")
    out.write(f"Rotated {old.id} ({old.name}, {old.masked}, owner {old.owner}) to {new.key.id}; the old key {ends}.\n")
    out.write("Copy the new key now; it is shown only once:\n")
    out.write(new.secret + "\n")
    _audit_post_queued(store, out, err)
    return EXIT_OK


def cmd_owners(store: Store, args, out: TextIO, err: TextIO) -> int:
    actor = getattr(args, "actor", None) or _cli_actor()
    if args.owners_command == "list":
        entries = store.owners.list()
        if args.json:
            _json(out, [{"owner": e.owner, "channel_id": e.channel_id, "set_by": e.set_by, "set_at": iso(e.set_at)}
                        for e in entries])
        elif not entries:
            out.write("No owner has a channel; everything goes to the audit channel only. "
                      "'apikeys owners set OWNER --channel C…' adds one.\n")
        else:
            _table(out, ("OWNER", "CHANNEL", "SET BY", "SET AT"),
                   [(e.owner, e.channel_id, e.set_by, iso(e.set_at)) for e in entries])
    elif args.owners_command == "set":
        if store.owners.set(args.owner, args.channel, actor=actor):
            out.write(f"{args.owner.strip()} is told in {args.channel} from now on (invite the bot there: /invite @apikeys).\n")
        else:
            out.write(f"{args.owner.strip()} is already told in {args.channel}; nothing changed.\n")
    else:
        store.owners.remove(args.owner, actor=actor)
        out.write(f"{args.owner.strip()} is no longer told in its channel.\n")
    return EXIT_OK


def cmd_notify(store: Store, args, out: TextIO, err: TextIO) -> int:
    notices = store.expiry.send()
    if not notices:
        out.write("Nothing to send: no active key ends within 14 days that was not told already for its "
                  "threshold.\n")
        return EXIT_OK
    channels = sorted({"the audit channel" if n.channel == SERVER_AUDIT_CHANNEL else n.channel for n in notices})
    out.write(f"Queued {len(notices)} expiry notice{'s' if len(notices) != 1 else ''} to {', '.join(channels)}; "
              "the server's deliverer posts them (retried until Slack takes them).\n")
    return EXIT_OK


def cmd_verify(store: Store, args, out: TextIO, err: TextIO) -> int:
    secret = _read_key(args, err, "verify")
    # An entry this command could not sign, on a signed log, would be named 'not written by apikeys'
    # for ever and raise a tamper alert: the check is then not recorded, and said so.
    record = store.audit.signer is not None or store.audit.signed_through() is None
    result, key = store.keys.check(secret, actor=_cli_actor(), record=record)  # an operator's check, not a use
    if key is not None and not record:
        err.write("apikeys: warning: this check is not recorded in the audit log: the log is signed and "
                  "APIKEYS_AUDIT_SIGNING_KEY is not set here (give the CLI the server's key)\n")
    if args.json:
        body = result.to_dict()
        if key is not None:  # the operator holds the secret: every key's name, owner and expiry
            body.update(key_id=key.id, name=key.name, owner=key.owner, expires_at=iso(key.expires_at))
        _json(out, body)
    else:
        out.write(result.code.value + "\n")
    return EXIT_OK if result.valid else EXIT_NEGATIVE


TOKEN_IN_TEXT_RE = re.compile(rf"{TOKEN_PREFIX}_[0-9A-Za-z]{{8,}}")


def _not_a_token(given: str) -> None:
    """An admin token (apkt_…) given where a key belongs is said to be one, never echoed."""
    if TOKEN_IN_TEXT_RE.search(given or ""):
        raise UsageError("that is an admin token of the management API, not a key: to end it, 'apikeys tokens "
                         "revoke TOKEN_ID --actor WHO' (ids in 'apikeys tokens list'); nothing changed")


def _read_key(args, err: TextIO, command: str) -> str:
    if args.key == "-":
        key = sys.stdin.readline().strip()
        _not_a_token(key)
        return key
    _not_a_token(args.key)
    err.write("apikeys: warning: the key is now in your shell history and visible in 'ps'; "
              f"next time use 'apikeys {command} -' and paste it on standard input\n")
    return args.key.strip()


def cmd_leak(store: Store, args, out: TextIO, err: TextIO, settings: Settings) -> int:
    """The path GitHub's alerts take (``storage.leaks``), for one key found by hand or another scanner."""
    secret = _read_key(args, err, "leak report")
    if not secret:
        raise UsageError("no key given (pass KEY, or - and the key on standard input)")
    (finding,) = store.leaks.report([Match(token=secret, url=args.url, source=args.source)], actor=_cli_actor(),
                                    policy=settings.public_leak_action, via=Via.CLI)
    if args.json:
        _json(out, {"ours": finding.ours, "key": key_to_dict(store.keys.get(finding.key.id)) if finding.ours else None,
                    "recorded": bool(finding.ours and finding.recorded),
                    "revoked_now": bool(finding.ours and finding.revoked_now)})
        if finding.ours and finding.revoked_now:
            _audit_post_queued(store, None, err)
        return EXIT_OK if finding.ours else EXIT_NEGATIVE
    if not finding.ours:
        shape = "one of our keys in shape, but no key we issued" if is_well_formed(secret) else \
            "not one of our keys (its format or checksum does not match)"
        out.write(f"That is {shape}; nothing recorded.\n")
        return EXIT_NEGATIVE
    key = finding.key
    named = f"{key.id} ({key.name}, {key.masked}, owner {key.owner})"
    if not finding.recorded:
        out.write(f"{named} was already reported found there; nothing changed.\n")
    elif finding.revoked_now:
        out.write(f"Revoked {named}, reason compromised; the leak is recorded. This cannot be undone.\n")
        _audit_post_queued(store, out, err)
    elif finding.status.value == "active":
        out.write(f"Recorded the leak of {named}; it is still active (APIKEYS_PUBLIC_LEAK_ACTION=alert): "
                  f"revoke it with 'apikeys revoke {key.id} --actor WHO --reason compromised'.\n")
    else:
        out.write(f"Recorded the leak of {named}; it was already {finding.status.value}.\n")
    return EXIT_OK


def cmd_audit(store: Store, args, out: TextIO, err: TextIO, settings: Settings) -> int:
    if args.audit_command == "export":
        return _audit_export(store, args, out, err)
    if (args.public_key or args.against_slack) and not args.verify:
        raise UsageError("--public-key and --against-slack go with --verify")
    if args.verify:
        return _audit_verify(store, args, out, err, settings)
    events = [event_to_dict(e) for e in store.audit.oldest_first(limit=args.limit)]  # a row that does not parse: exit 1
    if args.json:
        _json(out, events)
        return EXIT_OK
    rows = [(str(e["id"]), iso(datetime.fromisoformat(e["at"])), e["actor"], e["action"], e["key_id"] or "-",
             _summary(e["action"], e["details"])) for e in events]
    if not rows:
        out.write("The audit log is empty.\n")
        return EXIT_OK
    _table(out, ("ID", "AT", "ACTOR", "ACTION", "KEY", "SUMMARY"), rows)
    return EXIT_OK


SUMMARY_WIDTH = 90


# An action's words in the audit table, from its details as strings (``g(name)``; "" when absent).
_SAID: dict[str, Callable[[Callable[[str], str], dict], list[str]]] = {
    "key.created": lambda g, d: [f"owner {g('owner')}", f"expires {g('expires_at')}" if g("expires_at") else ""],
    "key.revoked": lambda g, d: [f"reason {g('reason')}" if g("reason") else "", f"note {g('note')!r}" if g("note") else "",
                                 f"via {g('via')}" if g("via") else ""],
    "key.rotated": lambda g, d: [f"replaced by {g('new_key_id')}", f"grace {g('grace')}"],
    "key.leaked": lambda g, d: [f"found at {g('url') or g('channel_id') or g('source') or '?'}",
                                "revoked" if d.get("revoked") else f"still {g('status') or '?'}"],
    "key.used_after_revoke": lambda g, d: [f"{g('uses')} use(s) after revocation, via {g('via')}"],
    "key.checked": lambda g, d: [f"answered {g('code')}"],
    "admin.added": lambda g, d: [g("user_id")], "admin.removed": lambda g, d: [g("user_id")],
    "owner.channel_set": lambda g, d: [f"{g('owner')} -> {g('channel_id')}"],
    "owner.channel_removed": lambda g, d: [f"{g('owner')} (was {g('channel_id')})"],
    "token.created": lambda g, d: [g("scopes")], "token.revoked": lambda g, d: [g("scopes")],
}


def _summary(action: str, details: Any) -> str:
    """An entry's details in a few words, for the table ('audit --json' has them all). Any details at
    all (an entry apikeys did not write may hold anything) give one masked, printable line."""
    if not isinstance(details, dict):
        return _one_line(json.dumps(details, ensure_ascii=False, default=str))
    d = {k: ("" if v is None else ",".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in details.items()}

    def g(key: str) -> str:
        return d.get(key, "")

    subject = " ".join(g(k) for k in ("name", "key", "token") if g(k))
    said = _SAID[action](g, details) if action in _SAID else None
    if said is None:  # an alert (its problem), or an action without words here: its simple fields
        said = [g("problem")] if g("problem") else [
            f"{k} {details[k]}" for k in sorted(d) if k not in ("name", "key", "token")
            and isinstance(details[k], str | int) and not isinstance(details[k], bool)]
    return _one_line("; ".join(x for x in [subject, *said] if x))


def _one_line(text: str) -> str:
    text = " ".join(redact(text).split())  # one line, whatever a note holds; never a key
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)  # no terminal escapes
    return text if len(text) <= SUMMARY_WIDTH else text[:SUMMARY_WIDTH - 1] + "\u2026"


def _audit_verify(store: Store, args, out: TextIO, err: TextIO, settings: Settings) -> int:
    """The chain, the checkpoints (against the pinned key, else this installation's key when it is
    configured) and, with --against-slack, every position the audit channel witnessed."""
    if args.public_key:
        pinned = checkpoints.load_public_key(args.public_key)
    else:
        pinned = settings.audit_signer.public_raw if settings.audit_signer else None
    client = _witness_client(settings) if args.against_slack else None
    with _Progress(err, "verifying the audit log", "entries") as bar:
        report = store.audit.verification(pinned, progress=bar)
    if report.public_key:
        out.write("Checkpoints are signed by this public key (pin it: apikeys audit --verify --public-key FILE):\n")
        out.write(checkpoints.pem_of_raw(report.public_key))
    if report.problem is not None:
        out.write(f"BROKEN: {report.problem}\n")
        return EXIT_NEGATIVE
    if report.checkpoints:
        out.write(f"OK: {report.entries} entries; the hash chain is intact and {report.checkpoints} signed "
                  f"checkpoints agree with it, through entry {report.signed_through}.\n")
    else:
        out.write(f"OK: {report.entries} entries; the hash chain is intact. The log is not signed "
                  "(no checkpoints): it is tamper-evident against edits only.\n")
    disagreements = integrity.table_problems(store.db)  # rows that skipped the log, or contradict it
    for problem in disagreements:
        out.write(f"BROKEN: {problem}\n")
    if not disagreements:
        out.write("OK: every key and admin in the tables has its entries in the log, and every revocation it "
                  "records.\n")
    if client is not None:
        from slack_sdk.errors import SlackApiError  # only here: importing slack_sdk costs every command 0.1 s

        from .witness import check_against_slack

        try:
            problem, seen = check_against_slack(store.audit, client, settings.audit_channel)
        except SlackApiError as exc:
            raise UsageError(f"Slack refused to read the audit channel: {exc.response.get('error')}") from None
        except OSError as exc:
            raise UsageError(f"cannot reach Slack: {exc}") from None
        if problem is not None:
            out.write(f"BROKEN: {problem}\n")
            return EXIT_NEGATIVE
        out.write(f"OK: all {seen} positions the audit channel witnessed agree with the log.\n")
    return EXIT_NEGATIVE if disagreements else EXIT_OK


def _witness_client(settings: Settings):
    if not settings.slack_bot_token or not settings.audit_channel:
        raise UsageError("--against-slack needs SLACK_BOT_TOKEN and APIKEYS_AUDIT_CHANNEL")
    from .slack.app import make_client

    return make_client(settings)


def _audit_export(store: Store, args, out: TextIO, err: TextIO) -> int:
    since = args.since
    if not args.follow:  # a stream that never ends has no bar
        with _Progress(err, "exporting the audit log", "entries") as bar:
            total = max(store.audit.last_id() - since, 0)
            for done, line in enumerate(store.audit.export(since=since), start=1):
                out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                if done % 1000 == 0:
                    bar(done, max(total, done))
        out.flush()
        return EXIT_OK
    stop = _stop_requested()
    while True:
        for line in store.audit.export(since=since):
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            since = line["id"]
        out.flush()
        for _ in range(FOLLOW_STEPS):  # short sleeps: a stop is seen within one
            if stop:
                return EXIT_OK  # every line written is complete
            time.sleep(FOLLOW_POLL / FOLLOW_STEPS)


def _stop_requested() -> list:
    """Non-empty once SIGTERM or Ctrl-C arrived, so that --follow stops between reads (never
    inside one). The handler only appends: it may run while the main thread holds any lock."""
    stop: list = []
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.append(True))
    except ValueError:  # not the main thread (run in-process): nothing to install
        pass
    return stop


def cmd_admins(store: Store, args, out: TextIO, err: TextIO) -> int:
    actor = getattr(args, "actor", None)
    if actor is None:
        actor = _cli_actor()
    if args.admins_command == "list":
        entries = store.admins.list()
        if args.json:
            _json(out, [{"user_id": e.user_id, "source": "APIKEYS_ADMINS" if e.source == "config" else "stored",
                         "added_by": e.added_by, "added_at": iso(e.added_at)} for e in entries])
            return EXIT_OK
        if not entries:
            out.write("No admins. Set APIKEYS_ADMINS or run 'apikeys admins add USER_ID'.\n")
            return EXIT_OK
        _table(out, ("USER", "SOURCE", "ADDED BY", "ADDED AT"),
               [(e.user_id, "APIKEYS_ADMINS" if e.source == "config" else "stored", e.added_by or "-", iso(e.added_at) or "-")
                for e in entries])
    elif args.admins_command == "add":
        if store.admins.add(args.user_id, actor=actor):
            out.write(f"{args.user_id.strip()} is now an admin.\n")
        else:
            out.write(f"{args.user_id.strip()} was already an admin; nothing changed.\n")
    else:
        store.admins.remove(args.user_id, actor=actor)
        out.write(f"{args.user_id.strip()} is no longer an admin.\n")
    return EXIT_OK


def cmd_tokens(store: Store, args, out: TextIO, err: TextIO) -> int:
    if args.tokens_command == "create":
        token, secret = store.tokens.create(name=args.name, scopes=args.scope, actor=args.actor,
                                            expires_in=args.expires_in)
        if args.json:
            _json(out, {"id": token.id, "name": token.name, "scopes": list(token.scope_list), "token": secret,
                        "masked": token.masked, "expires_at": iso(token.expires_at)})
        else:
            out.write(f"Created admin token {token.id} ({token.name}: {', '.join(token.scope_list)}; expires "
                      f"{iso(token.expires_at)}).\nCopy it now; it is shown only once:\n{secret}\n")
        return EXIT_OK
    if args.tokens_command == "list":
        now = utcnow()
        tokens = store.tokens.list()
        if args.json:
            _json(out, [t.to_dict(now) for t in tokens])
        elif not tokens:
            out.write("No admin tokens. Create one with 'apikeys tokens create --name NAME --scope keys:read --actor "
                      "WHO'.\n")
        else:
            _table(out, ("ID", "NAME", "SCOPES", "TOKEN", "STATUS", "CREATED", "EXPIRES", "LAST USED"),
                   [(t.id, t.name, ",".join(t.scope_list), t.masked, t.status_at(now), iso(t.created_at),
                     iso(t.expires_at), iso(t.last_used_at) or "never") for t in tokens])
        return EXIT_OK
    token, revoked_now = store.tokens.revoke(args.token_id, actor=args.actor)
    if revoked_now:
        out.write(f"Revoked admin token {token.id} ({token.name}, {token.masked}): every request with it is now 401.\n")
    else:
        out.write(f"{token.id} ({token.name}) was already revoked at {iso(token.revoked_at)} by {token.revoked_by}; "
                  "nothing changed.\n")
    return EXIT_OK


def cmd_keygen(args, out: TextIO) -> int:
    """A new audit signing key; only the public key goes to stdout (the private one to --out)."""
    _, public = checkpoints.generate(Path(args.out))
    out.write(public)
    return EXIT_OK


def cmd_db(store: Store, args, out: TextIO, err: TextIO) -> int:
    if args.db_command == "grant":
        statements = grants.grant_runtime(store.db, args.role)
        out.write(f"{args.role} may now do what the server needs and nothing more ({len(statements)} statements: "
                  "SELECT, INSERT and UPDATE where needed; no DDL, no TRUNCATE, no trigger changes). Serve with "
                  f"DATABASE_URL as {args.role}, and keep the owner's URL for 'apikeys db upgrade' "
                  "(DATABASE_MIGRATION_URL).\n")
        return EXIT_OK
    current, head = migrate.current_revision(store.db), migrate.head_revision()
    if args.db_command == "upgrade":
        # open_store has just applied any pending migration (and put back any guard trigger missing).
        out.write(f"The database schema is at revision {current} (newest: {head}).\n")
        return EXIT_OK
    # null: not checked (a schema that is not the newest is not checked further)
    status: dict[str, Any] = {"revision": current, "newest": head, "up_to_date": current == head,
                              "trigger_problems": None, "missing_privileges": None}
    if current != head:
        lines = [f"revision {current or 'none'}; newest {head}: run 'apikeys db upgrade'"]
    elif problems := integrity.trigger_problems(store.db):
        status["trigger_problems"] = [str(problem) for problem in problems]
        lines = [f"BROKEN: {problem}" for problem in problems] + [
            f"revision {current}, but {len(problems)} permanence trigger(s) missing or disabled: revocations and "
            "the audit log are not guarded; find out who did it ('apikeys audit --verify'), then run "
            "'apikeys db upgrade' as the owning role to put them back"]
    elif missing := grants.missing_privileges(store.db):
        status["trigger_problems"], status["missing_privileges"] = [], [str(m) for m in missing]
        role = grants.current_role(store.db)
        lines = [f"revision {current}, but the role {role} lacks {', '.join(missing)}: the server refuses to start "
                 f"like this; as the tables' owner run 'apikeys db grant {role}'"]
    else:
        status["trigger_problems"], status["missing_privileges"] = [], []
        lines = [f"revision {current}; up to date; all {integrity.trigger_count(store.db)} permanence triggers present "
                 "and enabled"]
    healthy = status["up_to_date"] and status["trigger_problems"] == [] and status["missing_privileges"] == []
    status["ok"] = healthy
    if args.json:
        _json(out, status)
    else:
        out.write("".join(line + "\n" for line in lines))
    return EXIT_OK if healthy else EXIT_NEGATIVE


WRITES = {"create", "revoke", "admins", "leak", "rotate", "owners", "notify", "tokens"}  # may append to the audit log
COMMANDS = {
    "create": cmd_create, "list": cmd_list, "revoke": cmd_revoke, "verify": cmd_verify,
    "admins": cmd_admins, "db": cmd_db, "rotate": cmd_rotate, "owners": cmd_owners, "notify": cmd_notify,
    "tokens": cmd_tokens,
}


def run(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
        env: dict[str, str] | None = None) -> int:
    out = out or sys.stdout
    err = _Redacting(err or sys.stderr)  # whatever goes wrong, no message repeats a key
    store = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv:  # 'apikeys' alone: what it can do
            build_parser().print_help(out)
            return EXIT_OK
        try:
            with contextlib.redirect_stdout(out):  # --help and --version print to our out
                args = build_parser().parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
        if args.command == "audit" and args.audit_command == "keygen":
            return cmd_keygen(args, out)
        if args.command == "playground":
            from .playground.app import main as playground

            return playground(["--host", args.host, "--port", str(args.port),
                               *(["--allow-existing-database"] if args.allow_existing_database else [])])
        settings = Settings.from_env(env)
        # Only `apikeys db upgrade` (and the server's start) changes the schema: a CLI of another
        # release pointed at production must never apply DDL on the side.
        # An admin token is made as the tables' owner too: the runtime role cannot insert one (least privilege).
        as_owner = ((args.command == "db" and args.db_command in ("upgrade", "grant"))
                    or (args.command == "tokens" and args.tokens_command == "create"))
        url = (settings.database_migration_url or settings.database_url) if as_owner else settings.database_url
        upgrading = args.command == "db" and args.db_command == "upgrade"
        # Without APIKEYS_AUDIT_CHANNEL here (a break-glass machine), posts are queued for the audit
        # channel of whichever server delivers them.
        with _Progress(err, "applying migrations", "migrations") as migrations:
            store = open_store(url, bootstrap_admins=settings.admins,
                               notify_channel=settings.audit_channel or SERVER_AUDIT_CHANNEL, signer=settings.audit_signer,
                               create_schema=upgrading, migration_progress=migrations if upgrading else None)
        if args.command != "db":
            migrate.require_head(store.db)
        if args.command == "audit":
            return cmd_audit(store, args, out, err, settings)
        writes = (args.command in WRITES and getattr(args, "admins_command", None) != "list"
                  and getattr(args, "owners_command", None) != "list" and getattr(args, "tokens_command", None) != "list")
        if writes and settings.audit_signer is None and store.audit.signed_through() is not None:
            err.write("apikeys: warning: APIKEYS_AUDIT_SIGNING_KEY is not set here, so this audit entry is not signed; "
                      "'apikeys audit --verify' reports it until a signed entry follows (give the CLI the server's key)\n")
        if args.command == "leak":
            return cmd_leak(store, args, out, err, settings)
        return COMMANDS[args.command](store, args, out, err)
    except UsageError as exc:
        err.write(f"apikeys: error: {exc}\n")
        return EXIT_USAGE
    except CorruptEntry as exc:  # a negative answer about the log, not a usage error
        err.write(f"apikeys: error: {exc}\n")
        return EXIT_NEGATIVE
    except (StorageError, ConfigError) as exc:
        err.write(f"apikeys: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("apikeys: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader of our output went away: main() ends quietly
        raise
    except Exception as exc:  # last resort: one line, no traceback, no secret
        err.write(f"apikeys: error: unexpected {type(exc).__name__}; nothing was changed unless reported above\n")
        return EXIT_USAGE
    finally:
        if store is not None:
            store.close()


class _Redacting:
    """A text stream that masks every key-shaped string written to it (stderr's last line of defence)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main() -> None:
    load_dotenv_file()
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:  # 'apikeys list | head': the reader has gone; end quietly
        import os

        # stdout to /dev/null, so that the interpreter's own flush at exit prints nothing either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
