"""Principals keep the public keys they signed with before a key rotation.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("principals") as table:
        table.add_column(sa.Column("retired_keys", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("principals") as table:
        table.drop_column("retired_keys")
