"""Who reset a principal's password, until the principal changes it.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("principals") as table:
        table.add_column(sa.Column("password_reset_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("principals") as table:
        table.drop_column("password_reset_by")
