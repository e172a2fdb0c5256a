"""Release 3: revocation and the audit log are permanent against the database's own statements.

Row triggers on UPDATE and DELETE (releases 1 and 2) leave three ways around them:

* SQLite's REPLACE conflict resolution (``REPLACE INTO``, ``INSERT OR REPLACE``, ``UPDATE OR
  REPLACE``) deletes the conflicting row without firing DELETE triggers, then writes the new one:
  a revoked key came back active, an audit entry was rewritten. Inserts are now guarded: a key
  whose id or digest exists, an audit entry whose position exists or is not past the head, and any
  key row that is not a new key (it carries a revocation) are refused. A key's id never changes.
* PostgreSQL's TRUNCATE fires no row triggers: statement triggers refuse it on the keys and the
  audit log.
* ``INSERT … ON CONFLICT DO UPDATE`` runs the UPDATE triggers already; nothing new is needed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NOT_A_NEW_KEY = ("NEW.revoked_at IS NOT NULL OR NEW.revoked_by IS NOT NULL OR NEW.revoke_reason IS NOT NULL "
                 "OR NEW.revoke_note IS NOT NULL")

SQLITE = [
    """CREATE TRIGGER api_keys_never_replaced
       BEFORE INSERT ON api_keys
       WHEN EXISTS (SELECT 1 FROM api_keys WHERE id = NEW.id OR digest = NEW.digest)
       BEGIN SELECT RAISE(ABORT, 'a key is never replaced: that id or digest already exists'); END""",
    f"""CREATE TRIGGER api_keys_insert_new_only
       BEFORE INSERT ON api_keys
       WHEN {NOT_A_NEW_KEY}
       BEGIN SELECT RAISE(ABORT, 'only a new key can be inserted (revoke it afterwards)'); END""",
    """CREATE TRIGGER api_keys_id_immutable
       BEFORE UPDATE OF id ON api_keys WHEN NEW.id IS NOT OLD.id
       BEGIN SELECT RAISE(ABORT, 'a key id never changes'); END""",
    """CREATE TRIGGER audit_events_append_only_insert
       BEFORE INSERT ON audit_events
       WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id)
            OR NEW.id <= (SELECT last_id FROM audit_head WHERE id = 1)
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: that entry already exists'); END""",
]

POSTGRES = [
    f"""CREATE OR REPLACE FUNCTION apikeys_guard_new_keys() RETURNS trigger AS $$
    BEGIN
      IF {NOT_A_NEW_KEY} THEN
        RAISE EXCEPTION 'only a new key can be inserted (revoke it afterwards)';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER api_keys_insert_new_only BEFORE INSERT ON api_keys
       FOR EACH ROW EXECUTE FUNCTION apikeys_guard_new_keys()""",
    """CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'keys are never deleted; revoke them';
      END IF;
      IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'a key id never changes';
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
    END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE FUNCTION apikeys_refuse_truncate() RETURNS trigger AS $$
    BEGIN
      IF TG_TABLE_NAME = 'api_keys' THEN
        RAISE EXCEPTION 'keys are never deleted; revoke them';
      END IF;
      RAISE EXCEPTION 'the audit log is append-only';
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER api_keys_never_truncated BEFORE TRUNCATE ON api_keys
       FOR EACH STATEMENT EXECUTE FUNCTION apikeys_refuse_truncate()""",
    """CREATE TRIGGER audit_events_never_truncated BEFORE TRUNCATE ON audit_events
       FOR EACH STATEMENT EXECUTE FUNCTION apikeys_refuse_truncate()""",
    """CREATE OR REPLACE FUNCTION apikeys_audit_insert_at_end() RETURNS trigger AS $$
    BEGIN
      IF NEW.id <= (SELECT last_id FROM audit_head WHERE id = 1) THEN
        RAISE EXCEPTION 'the audit log is append-only: that entry already exists';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_events_append_only_insert BEFORE INSERT ON audit_events
       FOR EACH ROW EXECUTE FUNCTION apikeys_audit_insert_at_end()""",
]


def upgrade() -> None:
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
