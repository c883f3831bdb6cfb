"""Plans and their items.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 00:00:00

Written by hand to match store/tables.py; tests/test_store.py checks that
autogenerate finds no difference.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _ts() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("customer_ids", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("view", _json(), nullable=False),
        sa.Column("report", _json(), nullable=True),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_plans")),
    )
    op.create_index(op.f("ix_plans_status"), "plans", ["status"])
    op.create_index(op.f("ix_plans_started_at"), "plans", ["started_at"])
    op.create_table(
        "plan_items",
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("wave_position", sa.Integer(), nullable=False),
        sa.Column("recommendation_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("execution_id", sa.String(), nullable=True),
        sa.Column("estimated_monthly_savings", sa.Float(), nullable=False),
        sa.Column("actual_monthly_savings", sa.Float(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("dry_run_status", sa.String(), nullable=True),
        sa.Column("dry_run_reason", sa.Text(), nullable=True),
        sa.Column("observed", _json(), nullable=True),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", "position", name=op.f("pk_plan_items")),
    )
    op.create_index("ix_plan_items_plan_id_wave", "plan_items", ["plan_id", "wave", "wave_position"])


def downgrade() -> None:
    op.drop_index("ix_plan_items_plan_id_wave", table_name="plan_items")
    op.drop_table("plan_items")
    op.drop_index(op.f("ix_plans_started_at"), table_name="plans")
    op.drop_index(op.f("ix_plans_status"), table_name="plans")
    op.drop_table("plans")
