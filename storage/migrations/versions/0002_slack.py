"""Release 2 (the Slack app and breach response): the audit outbox, idempotency receipts,
revoked-key use counters, a last-four index for find, and revocation notes made immutable.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if not inspector.has_table("outbox"):
        op.create_table(
            "outbox",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("created_at", TS, nullable=False),
            sa.Column("topic", sa.String(32), nullable=False),
            sa.Column("channel", sa.String(64), nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", TS, nullable=False),
            sa.Column("claimed_until", TS, nullable=True),
            sa.Column("claimed_by", sa.String(64), nullable=True),
            sa.Column("delivered_at", TS, nullable=True),
            sa.Column("last_error", sa.String(500), nullable=True),
        )
        op.create_index("ix_outbox_pending", "outbox", ["delivered_at", "next_attempt_at", "id"])
    if not inspector.has_table("receipts"):
        op.create_table(
            "receipts",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("at", TS, nullable=False),
        )
    if not inspector.has_table("revoked_key_uses"):
        op.create_table(
            "revoked_key_uses",
            sa.Column("key_id", sa.String(40), primary_key=True),
            sa.Column("uses", sa.Integer, nullable=False),
            sa.Column("first_at", TS, nullable=False),
            sa.Column("last_at", TS, nullable=False),
            sa.Column("last_alert_at", TS, nullable=True),
        )
    if "ix_api_keys_last4" not in {ix["name"] for ix in inspector.get_indexes("api_keys")}:
        op.create_index("ix_api_keys_last4", "api_keys", ["last4"])
    # A revocation's note joins the fields that never change once a key is revoked.
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS api_keys_revocation_permanent")
        op.execute("""CREATE TRIGGER api_keys_revocation_permanent
           BEFORE UPDATE ON api_keys
           WHEN OLD.revoked_at IS NOT NULL AND (
                NEW.revoked_at IS NULL OR NEW.revoked_at IS NOT OLD.revoked_at
                OR NEW.revoked_by IS NOT OLD.revoked_by OR NEW.revoke_reason IS NOT OLD.revoke_reason
                OR NEW.revoke_note IS NOT OLD.revoke_note)
           BEGIN SELECT RAISE(ABORT, 'revocation is permanent'); END""")
    else:
        op.execute("""CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$
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
               OR NEW.revoke_reason IS DISTINCT FROM OLD.revoke_reason
               OR NEW.revoke_note IS DISTINCT FROM OLD.revoke_note) THEN
            RAISE EXCEPTION 'revocation is permanent';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql""")


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
