"""steps.details: what a step's record says beyond its columns (error_kind, backend, model,
capabilities, and `caught`, the failure its `catch` turned into its output), as JSON. Existing
rows have none: null, read as no details.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("steps", sa.Column("details", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("details")
