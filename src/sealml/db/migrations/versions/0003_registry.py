"""Model registry: versions, alias moves, approvals, TOTP secrets.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_id", sa.String(32), sa.ForeignKey("artifacts.id"), nullable=False),
        sa.Column("signature_id", sa.String(32), sa.ForeignKey("artifacts.id"), nullable=False),
        sa.Column("scan_id", sa.String(32), sa.ForeignKey("artifacts.id"), nullable=False),
        sa.Column("provenance_id", sa.String(32), nullable=True),
        sa.Column("evaluation_id", sa.String(32), nullable=True),
        sa.Column("trained_by", sa.String(64), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("registered_at", sa.String(40), nullable=False),
        sa.Column("statement", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("status_seq", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_model_versions_name", "model_versions", ["name"])
    op.create_table(
        "model_alias_moves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_model_alias_moves_name", "model_alias_moves", ["name"])
    op.create_table(
        "model_approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("approver", sa.String(64), nullable=False),
        sa.Column("approved_at", sa.String(40), nullable=False),
        sa.Column("used_at", sa.String(40), nullable=True),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_model_approvals_name", "model_approvals", ["name"])
    op.create_table(
        "totp_secrets",
        sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), primary_key=True),
        sa.Column("secret_box", sa.LargeBinary(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    for table in ("totp_secrets", "model_approvals", "model_alias_moves", "model_versions"):
        op.drop_table(table)
