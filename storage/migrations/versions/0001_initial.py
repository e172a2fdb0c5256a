"""Release 1: keys, the hash-chained audit log, admins, and the guard triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

SQLITE_TRIGGERS = [
    """CREATE TRIGGER api_keys_revocation_permanent
       BEFORE UPDATE ON api_keys
       WHEN OLD.revoked_at IS NOT NULL AND (
            NEW.revoked_at IS NULL OR NEW.revoked_at IS NOT OLD.revoked_at
            OR NEW.revoked_by IS NOT OLD.revoked_by OR NEW.revoke_reason IS NOT OLD.revoke_reason)
       BEGIN SELECT RAISE(ABORT, 'revocation is permanent'); END""",
    """CREATE TRIGGER api_keys_digest_immutable
       BEFORE UPDATE OF digest ON api_keys WHEN NEW.digest IS NOT OLD.digest
       BEGIN SELECT RAISE(ABORT, 'a key digest never changes'); END""",
    """CREATE TRIGGER api_keys_never_deleted
       BEFORE DELETE ON api_keys
       BEGIN SELECT RAISE(ABORT, 'keys are never deleted; revoke them'); END""",
    """CREATE TRIGGER audit_events_append_only_update
       BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_events_append_only_delete
       BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]

POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'keys are never deleted; revoke them';
      END IF;
      IF NEW.digest IS DISTINCT FROM OLD.digest THEN
        RAISE EXCEPTION 'a key digest never changes';
      END IF;
      IF OLD.revoked_at IS NOT NULL AND (
           NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
           OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by
           OR NEW.revoke_reason IS DISTINCT FROM OLD.revoke_reason) THEN
        RAISE EXCEPTION 'revocation is permanent';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER api_keys_guard BEFORE UPDATE OR DELETE ON api_keys
       FOR EACH ROW EXECUTE FUNCTION apikeys_guard_keys()""",
    """CREATE OR REPLACE FUNCTION apikeys_audit_append_only() RETURNS trigger AS $$
    BEGIN
      RAISE EXCEPTION 'the audit log is append-only';
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION apikeys_audit_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.Column("revoke_reason", sa.String(32), nullable=True),
        sa.Column("revoke_note", sa.String(1000), nullable=True),
    )
    op.create_index("ix_api_keys_created", "api_keys", ["created_at", "id"])
    op.create_index("ix_api_keys_owner_created", "api_keys", ["owner", "created_at", "id"])
    op.create_index("ix_api_keys_revoked_created", "api_keys", ["revoked_at", "created_at", "id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_key", "audit_events", ["key_id", "id"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.Integer, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    op.execute(sa.text("INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, :g)").bindparams(g="0" * 64))
    op.create_table(
        "admins",
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("added_by", sa.String(200), nullable=False),
        sa.Column("added_at", TS, nullable=False),
    )
    triggers = SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else POSTGRES_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
