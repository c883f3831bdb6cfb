"""Savings measured a while after each change (issue 15, "Savings checked").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:00:00

Written by hand to match store/tables.py; tests/test_store.py checks that
autogenerate finds no difference. A new table: nothing existing changes.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _ts() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "savings_measurements",
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("region", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("estimated_monthly_savings", sa.Float(), nullable=False),
        sa.Column("verified_monthly_savings", sa.Float(), nullable=True),
        sa.Column("measured_monthly_savings", sa.Float(), nullable=True),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("evidence", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("period_start", _ts(), nullable=False),
        sa.Column("period_end", _ts(), nullable=False),
        sa.Column("measured_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name=op.f("pk_savings_measurements")),
    )
    op.create_index(op.f("ix_savings_measurements_customer_id"), "savings_measurements", ["customer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_savings_measurements_customer_id"), table_name="savings_measurements")
    op.drop_table("savings_measurements")
