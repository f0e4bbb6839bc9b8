"""The store: chains, invocations (with leases and rerun lineage), steps (with approvals),
events (the outbox).

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(64)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "chains",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("handle", sa.String(255), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("deleted_at", sa.Double),
    )
    op.create_index("ix_chains_created", "chains", ["created_at", "id"])

    op.create_table(
        "invocations",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("chain_id", _ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("input", _json(), nullable=False),
        sa.Column("output", sa.Text),
        sa.Column("status_message", sa.Text),
        sa.Column("options", _json()),
        sa.Column("callback_url", sa.Text),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(128)),
        sa.Column("rerun_of", _ID),
        sa.Column("rerun_from_step", sa.String(255)),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("wake_at", sa.Double),
        sa.Column("signals", sa.Integer, nullable=False, server_default="0"),
        sa.Column("event_seq", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("idempotency_key", name="uq_invocations_idempotency_key"),
    )
    op.create_index("ix_invocations_created", "invocations", ["created_at", "id"])
    op.create_index("ix_invocations_chain", "invocations", ["chain_id", "created_at"])
    op.create_index("ix_invocations_state", "invocations", ["state", "created_at"])
    op.create_index("ix_invocations_finished", "invocations", ["finished_at"])

    op.create_table(
        "steps",
        sa.Column("invocation_id", _ID, primary_key=True),
        sa.Column("handle", sa.String(255), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("output", sa.Text),
        sa.Column("status_message", sa.Text),
        sa.Column("attempts", _json()),
        sa.Column("usage", _json()),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("approval_state", sa.String(16)),
        sa.Column("token_hash", sa.String(128)),
        sa.Column("approval_deadline", sa.Double),
        sa.Column("approval", _json()),
        sa.UniqueConstraint("token_hash", name="uq_steps_token_hash"),
    )

    op.create_table(
        "events",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("invocation_id", _ID, nullable=False),
        sa.Column("chain_id", _ID, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("step", sa.String(255)),
        sa.Column("data", _json()),
        sa.Column("url", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.Double),
        sa.Column("next_attempt_at", sa.Double),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Double),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("claim_attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claim_expires_at", sa.Double),
        sa.UniqueConstraint("invocation_id", "seq", name="uq_events_invocation_seq"),
    )
    op.create_index("ix_events_due", "events", ["state", "next_attempt_at"])


def downgrade() -> None:
    for table in ("events", "steps", "invocations", "chains"):
        op.drop_table(table)
