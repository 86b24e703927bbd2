"""The workspace key's signature over each API key's record.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("attestation", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("attestation")
