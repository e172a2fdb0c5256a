"""Least privilege on PostgreSQL: the server's runtime role gets exactly what it needs.

The role that owns the tables can drop or disable the permanence triggers and TRUNCATE; a role that
is granted only the statements below cannot (``ALTER TABLE``, ``DROP TRIGGER`` and ``TRUNCATE`` need
ownership or a privilege it never gets). Migrations run as the owner (``DATABASE_MIGRATION_URL``,
else ``DATABASE_URL``); the server and the command line run as the runtime role.
"""

from __future__ import annotations

import re

from sqlalchemy import text

from . import migrate
from .db import Database
from .errors import InvalidInput

# What each table needs, and no more: the log and its checkpoints are only ever inserted; keys are
# inserted and updated (revocation, last use); admins are the one table rows leave.
RUNTIME_PRIVILEGES = {
    "api_keys": ("SELECT", "INSERT", "UPDATE"),
    "audit_events": ("SELECT", "INSERT"),
    "audit_checkpoints": ("SELECT", "INSERT"),
    "audit_head": ("SELECT", "INSERT", "UPDATE"),
    "admins": ("SELECT", "INSERT", "UPDATE", "DELETE"),  # UPDATE: removals lock the table (FOR UPDATE)
    "outbox": ("SELECT", "INSERT", "UPDATE"),
    "receipts": ("SELECT", "INSERT"),
    "revoked_key_uses": ("SELECT", "INSERT", "UPDATE"),
    "owner_channels": ("SELECT", "INSERT", "UPDATE", "DELETE"),  # an owner's channel is set, moved and cleared
    "message_refs": ("SELECT", "INSERT"),  # the cards to keep true: recorded, read
    "reveals": ("SELECT", "INSERT", "UPDATE"),  # a one-time link: sealed, then its ciphertext cleared (viewed, expired)
    "expiry_notices": ("SELECT", "INSERT"),  # which warnings were sent: claimed once
    # Read, last use, revoked; never INSERT: an admin token is made as the tables' owner ('apikeys tokens
    # create' uses DATABASE_MIGRATION_URL), so the server's role cannot mint one (the triggers keep the rest fixed).
    "api_tokens": ("SELECT", "UPDATE"),
    "idempotency_keys": ("SELECT", "INSERT", "DELETE"),  # a write's first answer; dropped after 24 hours
    "token_writes": ("SELECT", "INSERT", "UPDATE", "DELETE"),  # writes per token per minute
    "alembic_version": ("SELECT",),
}
_ROLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _quoted(role: str) -> str:
    return '"' + role + '"'


def grant_runtime(db: Database, role: str) -> list[str]:
    """Give ``role`` exactly the runtime privileges (everything else on this schema's tables and
    sequences revoked first). Run as the tables' owner. Returns the statements run."""
    if db.dialect != "postgresql":
        raise InvalidInput("'apikeys db grant' is for PostgreSQL; on SQLite, keep the database file (mode 0600) "
                           "readable only by the user the server runs as")
    if not _ROLE_RE.match(role or ""):
        raise InvalidInput("ROLE must be a PostgreSQL role name (letters, digits and underscores)")
    with db.write() as session:
        # Replicas starting together grant at once: they queue on the migrations' lock (PostgreSQL would
        # otherwise fail one GRANT with "tuple concurrently updated").
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": migrate.LOCK_ID})
        found = session.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if found is None:
            raise InvalidInput(f"there is no PostgreSQL role {role}: create it first (CREATE ROLE {role} LOGIN "
                               "PASSWORD '…')")
        if found[0]:
            raise InvalidInput(f"{role} is a superuser: it bypasses every privilege; use an ordinary login role")
        owners = set(session.execute(text(
            "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(:t)"),
            {"t": list(RUNTIME_PRIVILEGES)}).scalars())
        if not owners:
            raise InvalidInput("the database has no apikeys tables yet: run 'apikeys db upgrade' first")
        if role in owners:
            raise InvalidInput(f"{role} owns the tables, so it can disable their triggers whatever it is granted; "
                               "grant a separate runtime role")
        schema = session.execute(text("SELECT current_schema()")).scalar()
        who, where = _quoted(role), _quoted(schema)
        statements = [
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {who}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {who}",
            f"REVOKE CREATE ON SCHEMA {where} FROM {who}",
            f"GRANT USAGE ON SCHEMA {where} TO {who}",
            *(f"GRANT {', '.join(privileges)} ON TABLE {where}.{_quoted(table)} TO {who}"
              for table, privileges in RUNTIME_PRIVILEGES.items()),
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {who}",
        ]
        for statement in statements:
            session.execute(text(statement))
    return statements


def current_role(db: Database) -> str | None:
    """The PostgreSQL role this connection runs as (None on SQLite)."""
    if db.dialect != "postgresql":
        return None
    with db.read() as session:
        return session.execute(text("SELECT current_user")).scalar()


def missing_privileges(db: Database) -> list[str]:
    """What this connection's role lacks of RUNTIME_PRIVILEGES on the tables that exist, as
    ``"SELECT on owner_channels"``; empty on SQLite, for an owner, and once ``grant_runtime`` ran
    after the newest migration. A table a migration added is missing until it is granted again."""
    if db.dialect != "postgresql":
        return []
    with db.read() as session:
        present = set(session.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(:t)"),
            {"t": list(RUNTIME_PRIVILEGES)}).scalars())
        missing = []
        for table, privileges in RUNTIME_PRIVILEGES.items():
            if table not in present:
                continue
            for privilege in privileges:
                allowed = session.execute(text(
                    "SELECT has_table_privilege(current_user, quote_ident(current_schema()) || '.' || quote_ident(:t), "
                    ":p)"), {"t": table, "p": privilege}).scalar()
                if not allowed:
                    missing.append(f"{privilege} on {table}")
    return missing


def owner_warning(db: Database) -> str | None:
    """Why this connection's role is more than a runtime role (it owns the tables, or is a
    superuser), or None. Always None on SQLite."""
    if db.dialect != "postgresql":
        return None
    with db.read() as session:
        role, superuser = session.execute(text(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")).one()
        owns = session.execute(text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(:t) "
            "AND tableowner = current_user"), {"t": list(RUNTIME_PRIVILEGES)}).scalar()
    if superuser:
        what = f"the database role {role} is a superuser"
    elif owns:
        what = f"the database role {role} owns the tables"
    else:
        return None
    return (f"{what}: whoever holds DATABASE_URL can disable the permanence triggers or TRUNCATE (detected by the "
            "self-check, not prevented); run migrations as the owner (DATABASE_MIGRATION_URL) and serve as a runtime "
            "role ('apikeys db grant ROLE')")
