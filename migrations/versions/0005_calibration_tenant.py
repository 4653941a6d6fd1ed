"""calibrations belong to a tenant (NULL: the platform's)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 18:40:00.000000

Every run made before this revision was global; it becomes a platform run (tenant NULL),
which serves a tenant only where the tenant has no active run of its own.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calibrations", sa.Column("tenant", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_calibrations_tenant"), "calibrations", ["tenant"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_calibrations_tenant"), table_name="calibrations")
    op.drop_column("calibrations", "tenant")
