"""steps.error_kind, backend, model, capabilities: a stored step keeps what the engine's record
says beyond its result (what kind of failure ended it, who answered, the capability levels
served), so status and a resumed run show them. Existing rows have none: null, as a step that
has not run. Attempts' `error_kind` lives in the `attempts` JSON (no column).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("steps", sa.Column("error_kind", sa.String(16)))
    op.add_column("steps", sa.Column("backend", sa.String(255)))
    op.add_column("steps", sa.Column("model", sa.String(255)))
    op.add_column("steps", sa.Column("capabilities", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        for column in ("capabilities", "model", "backend", "error_kind"):
            batch.drop_column(column)
