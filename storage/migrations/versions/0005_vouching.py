"""Release 5: each checkpoint vouches only for the entries of its own transaction; the head moves forward only.

* ``audit_checkpoints.first_entry_id``: the first entry the checkpoint's append wrote (signed as part
  of its message, ``storage.checkpoints``). Entries between one checkpoint's ``entry_id`` and the
  next one's ``first_entry_id`` were not written by apikeys. Older checkpoints keep NULL (version 1).
* ``audit_head`` may only move forward, onto an entry that exists with that hash: rolling the head back
  (to hide the newest entries) or pointing it at nothing is refused by the database.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQLITE = [
    """CREATE TRIGGER audit_head_forward_only
       BEFORE UPDATE ON audit_head
       WHEN NEW.id IS NOT OLD.id OR NEW.last_id < OLD.last_id
            OR NOT EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.last_id AND hash = NEW.last_hash)
       BEGIN SELECT RAISE(ABORT, 'the audit head only moves forward, onto an entry of the log'); END""",
    """CREATE TRIGGER audit_head_never_deleted
       BEFORE DELETE ON audit_head
       BEGIN SELECT RAISE(ABORT, 'the audit head is never deleted'); END""",
]

POSTGRES = [
    """CREATE OR REPLACE FUNCTION apikeys_audit_head_forward() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the audit head is never deleted';
      END IF;
      IF NEW.id IS DISTINCT FROM OLD.id OR NEW.last_id < OLD.last_id
         OR NOT EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.last_id AND hash = NEW.last_hash) THEN
        RAISE EXCEPTION 'the audit head only moves forward, onto an entry of the log';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head
       FOR EACH ROW EXECUTE FUNCTION apikeys_audit_head_forward()""",
    """CREATE TRIGGER audit_head_never_truncated BEFORE TRUNCATE ON audit_head
       FOR EACH STATEMENT EXECUTE FUNCTION apikeys_refuse_truncate()""",
]


def upgrade() -> None:
    op.add_column("audit_checkpoints", sa.Column("first_entry_id", sa.Integer, nullable=True))
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
