"""A registered version's SBOM (CycloneDX) artifact.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as table:
        table.add_column(sa.Column("sbom_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as table:
        table.drop_column("sbom_id")
