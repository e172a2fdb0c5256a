"""Release 4: signed checkpoints of the audit log, append-only like the log itself.

A checkpoint row is written in the transaction that appends the entries it covers, after them:
it must name the log's head (``entry_id`` = ``audit_head.last_id``) and come after every earlier
checkpoint. Rows are never updated or deleted (nor truncated, on PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SQLITE = [
    """CREATE TRIGGER audit_checkpoints_append_only_update
       BEFORE UPDATE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END""",
    """CREATE TRIGGER audit_checkpoints_append_only_delete
       BEFORE DELETE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END""",
    """CREATE TRIGGER audit_checkpoints_at_the_head
       BEFORE INSERT ON audit_checkpoints
       WHEN NEW.entry_id IS NOT (SELECT last_id FROM audit_head WHERE id = 1)
            OR EXISTS (SELECT 1 FROM audit_checkpoints WHERE entry_id >= NEW.entry_id)
       BEGIN SELECT RAISE(ABORT, 'a checkpoint names the head of the log, after every earlier one'); END""",
]

POSTGRES = [
    """CREATE OR REPLACE FUNCTION apikeys_checkpoints_append_only() RETURNS trigger AS $$
    BEGIN
      RAISE EXCEPTION 'audit checkpoints are append-only';
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
       FOR EACH ROW EXECUTE FUNCTION apikeys_checkpoints_append_only()""",
    """CREATE TRIGGER audit_checkpoints_never_truncated BEFORE TRUNCATE ON audit_checkpoints
       FOR EACH STATEMENT EXECUTE FUNCTION apikeys_checkpoints_append_only()""",
    """CREATE OR REPLACE FUNCTION apikeys_checkpoint_at_head() RETURNS trigger AS $$
    BEGIN
      IF NEW.entry_id IS DISTINCT FROM (SELECT last_id FROM audit_head WHERE id = 1)
         OR EXISTS (SELECT 1 FROM audit_checkpoints WHERE entry_id >= NEW.entry_id) THEN
        RAISE EXCEPTION 'a checkpoint names the head of the log, after every earlier one';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_checkpoints_at_the_head BEFORE INSERT ON audit_checkpoints
       FOR EACH ROW EXECUTE FUNCTION apikeys_checkpoint_at_head()""",
]


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("entry_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
