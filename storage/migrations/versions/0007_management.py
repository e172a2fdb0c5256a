"""Release 7: the management API — admin tokens, idempotent writes, a per-token write budget.

* ``api_tokens``: admin tokens (``apkt_…``), stored like keys: a digest, the last four characters. Guarded
  like keys: never deleted or replaced, inserted only as new, and a token's id, digest, name, scopes,
  creation and expiry never change (a runtime role that can UPDATE a token's last use cannot widen its
  scopes or lengthen its life); a revocation is permanent.
* ``idempotency_keys``: a write's first answer (never a secret), by token and ``Idempotency-Key``, 24 hours.
* ``token_writes``: writes per token per minute, shared by the replicas.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

SQLITE = [
    """CREATE TRIGGER api_tokens_never_deleted
       BEFORE DELETE ON api_tokens
       BEGIN SELECT RAISE(ABORT, 'tokens are never deleted; revoke them'); END""",
    """CREATE TRIGGER api_tokens_never_replaced
       BEFORE INSERT ON api_tokens
       WHEN EXISTS (SELECT 1 FROM api_tokens WHERE id = NEW.id OR digest = NEW.digest)
       BEGIN SELECT RAISE(ABORT, 'a token is never replaced: that id or digest already exists'); END""",
    """CREATE TRIGGER api_tokens_insert_new_only
       BEFORE INSERT ON api_tokens
       WHEN NEW.revoked_at IS NOT NULL OR NEW.revoked_by IS NOT NULL
       BEGIN SELECT RAISE(ABORT, 'only a new token can be inserted (revoke it afterwards)'); END""",
    """CREATE TRIGGER api_tokens_immutable
       BEFORE UPDATE ON api_tokens
       WHEN NEW.id IS NOT OLD.id OR NEW.digest IS NOT OLD.digest OR NEW.name IS NOT OLD.name
            OR NEW.scopes IS NOT OLD.scopes OR NEW.created_at IS NOT OLD.created_at
            OR NEW.created_by IS NOT OLD.created_by OR NEW.expires_at IS NOT OLD.expires_at
            OR NEW.prefix IS NOT OLD.prefix OR NEW.last4 IS NOT OLD.last4
       BEGIN SELECT RAISE(ABORT, 'a token''s id, digest, name, scopes and lifetime never change'); END""",
    """CREATE TRIGGER api_tokens_revocation_permanent
       BEFORE UPDATE ON api_tokens
       WHEN OLD.revoked_at IS NOT NULL
            AND (NEW.revoked_at IS NOT OLD.revoked_at OR NEW.revoked_by IS NOT OLD.revoked_by)
       BEGIN SELECT RAISE(ABORT, 'revocation is permanent'); END""",
]

POSTGRES = [
    """CREATE OR REPLACE FUNCTION apikeys_guard_tokens() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'tokens are never deleted; revoke them';
      END IF;
      IF TG_OP = 'INSERT' THEN
        IF NEW.revoked_at IS NOT NULL OR NEW.revoked_by IS NOT NULL THEN
          RAISE EXCEPTION 'only a new token can be inserted (revoke it afterwards)';
        END IF;
        RETURN NEW;
      END IF;
      IF NEW.id IS DISTINCT FROM OLD.id OR NEW.digest IS DISTINCT FROM OLD.digest
         OR NEW.name IS DISTINCT FROM OLD.name OR NEW.scopes IS DISTINCT FROM OLD.scopes
         OR NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.created_by IS DISTINCT FROM OLD.created_by
         OR NEW.expires_at IS DISTINCT FROM OLD.expires_at OR NEW.prefix IS DISTINCT FROM OLD.prefix
         OR NEW.last4 IS DISTINCT FROM OLD.last4 THEN
        RAISE EXCEPTION 'a token''s id, digest, name, scopes and lifetime never change';
      END IF;
      IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
                                         OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by) THEN
        RAISE EXCEPTION 'revocation is permanent';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER api_tokens_guard BEFORE INSERT OR UPDATE OR DELETE ON api_tokens
       FOR EACH ROW EXECUTE FUNCTION apikeys_guard_tokens()""",
    """CREATE OR REPLACE FUNCTION apikeys_refuse_token_truncate() RETURNS trigger AS $$
    BEGIN
      RAISE EXCEPTION 'tokens are never deleted; revoke them';
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER api_tokens_never_truncated BEFORE TRUNCATE ON api_tokens
       FOR EACH STATEMENT EXECUTE FUNCTION apikeys_refuse_token_truncate()""",
]


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_api_tokens_digest", "api_tokens", ["digest"], unique=True)
    # One token of a name at a time: the audit log's actor is token:<name>.
    op.create_index("ix_api_tokens_live_name", "api_tokens", ["name"], unique=True,
                    sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL"))
    op.create_table(
        "idempotency_keys",
        sa.Column("token_id", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])
    op.create_table(
        "token_writes",
        sa.Column("token_id", sa.String(40), primary_key=True),
        sa.Column("window_start", TS, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
