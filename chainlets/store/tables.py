"""The schema as SQLAlchemy Core tables, for queries. Its history is the alembic migrations in
`migrations/versions/`; tests/store/test_migrations.py checks the two agree.

Times are POSIX seconds (double precision): the same on SQLite and PostgreSQL, ordered and
compared as numbers, converted to datetimes only in the models.
"""

import sqlalchemy as sa

__all__ = ["chains", "events", "invocations", "metadata", "steps"]

metadata = sa.MetaData()

_ID = sa.String(64)
_JSON = sa.JSON(none_as_null=True)

chains = sa.Table(
    "chains", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("handle", sa.String(255), nullable=False),
    sa.Column("spec", _JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("deleted_at", sa.Double),
    sa.Index("ix_chains_created", "created_at", "id"),
)

invocations = sa.Table(
    "invocations", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("chain_id", _ID, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("input", _JSON, nullable=False),
    sa.Column("output", sa.Text),
    sa.Column("status_message", sa.Text),
    sa.Column("options", _JSON),
    sa.Column("callback_url", sa.Text),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("request_hash", sa.String(128)),
    sa.Column("rerun_of", _ID),
    sa.Column("rerun_from_step", sa.String(255)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
    # The lease: who runs it, the fencing attempt (bumped by every claim), until when.
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_expires_at", sa.Double),
    # A waiting invocation becomes claimable at its earliest approval deadline.
    sa.Column("wake_at", sa.Double),
    sa.Column("signals", sa.Integer, nullable=False, server_default="0"),
    sa.Column("event_seq", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("idempotency_key", name="uq_invocations_idempotency_key"),
    sa.Index("ix_invocations_created", "created_at", "id"),
    sa.Index("ix_invocations_chain", "chain_id", "created_at"),
    sa.Index("ix_invocations_state", "state", "created_at"),
    sa.Index("ix_invocations_finished", "finished_at"),
)

steps = sa.Table(
    "steps", metadata,
    sa.Column("invocation_id", _ID, primary_key=True),
    sa.Column("handle", sa.String(255), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("output", sa.Text),
    sa.Column("status_message", sa.Text),
    sa.Column("attempts", _JSON),
    sa.Column("usage", _JSON),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("approval_state", sa.String(16)),
    sa.Column("token_hash", sa.String(128)),
    sa.Column("approval_deadline", sa.Double),
    sa.Column("approval", _JSON),
    # The record's other fields, as JSON (revision 0003; null in older rows): error_kind,
    # backend, model, capabilities, caught.
    sa.Column("details", _JSON),
    sa.UniqueConstraint("token_hash", name="uq_steps_token_hash"),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("invocation_id", _ID, nullable=False),
    sa.Column("chain_id", _ID, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("step", sa.String(255)),
    sa.Column("data", _JSON),
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
    # Retries are scheduled within the give-up period from here: creation, or a redelivery
    # (revision 0002; null in rows an older replica writes, read as `created_at`).
    sa.Column("window_start", sa.Double),
    sa.UniqueConstraint("invocation_id", "seq", name="uq_events_invocation_seq"),
    sa.Index("ix_events_due", "state", "next_attempt_at"),
)
