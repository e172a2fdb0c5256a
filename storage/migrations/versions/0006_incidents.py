"""Release 6: through the incident — rotation, owners' channels, cards kept true, one-time links.

* ``api_keys.rotated_to`` / ``rotated_at`` / ``rotated_by``: a rotated key names its replacement; it
  ends at ``expires_at`` (the end of its grace period), indexed for the expiry digest.
* ``owner_channels``: where an owner's people are told.
* ``message_refs``: the messages showing a key's buttons, updated when it is revoked or rotated.
* ``reveals``: one-time links (only a ciphertext whose key is in the link's fragment).
* ``expiry_notices``: which key was told of which expiry threshold (once each).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("rotated_to", sa.String(40), nullable=True))
    op.add_column("api_keys", sa.Column("rotated_at", TS, nullable=True))
    op.add_column("api_keys", sa.Column("rotated_by", sa.String(200), nullable=True))
    op.create_index("ix_api_keys_expires", "api_keys", ["expires_at"])
    op.create_table(
        "owner_channels",
        sa.Column("owner", sa.String(100), primary_key=True),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
        sa.Column("set_at", TS, nullable=False),
    )
    op.create_table(
        "message_refs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("channel", "ts", "key_id", name="uq_message_refs_message_key"),
    )
    op.create_index("ix_message_refs_key", "message_refs", ["key_id"])
    op.create_table(
        "reveals",
        sa.Column("token_digest", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("for_user", sa.String(200), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("viewed_at", TS, nullable=True),
        sa.Column("expired_at", TS, nullable=True),
    )
    op.create_index("ix_reveals_expires", "reveals", ["expires_at"])
    op.create_table(
        "expiry_notices",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("threshold_days", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sent_at", TS, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the key store is never downgraded (revocations and the audit log are permanent)")
