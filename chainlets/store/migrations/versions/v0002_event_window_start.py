"""events.window_start: a redelivered event's retry period starts at its redelivery, not at
its creation. Existing rows start theirs at creation, as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("window_start", sa.Double))
    op.execute("UPDATE events SET window_start = created_at")


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("window_start")
