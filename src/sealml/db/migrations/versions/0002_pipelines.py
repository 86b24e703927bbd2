"""Pipelines: lineage index, attestations, runs and stage runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_parents",
        sa.Column("child_id", sa.String(32), sa.ForeignKey("artifacts.id"), primary_key=True),
        sa.Column("parent_id", sa.String(32), primary_key=True),
    )
    op.create_index("ix_artifact_parents_parent_id", "artifact_parents", ["parent_id"])
    op.create_table(
        "attestations",
        sa.Column("subject_id", sa.String(32), sa.ForeignKey("artifacts.id"), primary_key=True),
        sa.Column("attestation_id", sa.String(32), sa.ForeignKey("artifacts.id"), nullable=False),
    )
    op.create_index("ix_attestations_attestation_id", "attestations", ["attestation_id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("finished_at", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_runs_pipeline", "runs", ["pipeline"])
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("stage", sa.String(255), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=False),
        sa.Column("attestation_id", sa.String(32), nullable=True),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("finished_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_stage_runs_run_id", "stage_runs", ["run_id"])
    op.create_index("ix_stage_runs_cache_key", "stage_runs", ["cache_key"])


def downgrade() -> None:
    for table in ("stage_runs", "runs", "attestations", "artifact_parents"):
        op.drop_table(table)
