"""Savings ledger, and the verified savings of each execution.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00

Written by hand to match store/tables.py; tests/test_store.py checks that
autogenerate finds no difference. Existing executions get a NULL
`actual_monthly_savings` (no view before this revision carried the figure), and
the ledger starts empty: it only records changes completed from now on.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _ts() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # A nullable column needs no table rebuild, on SQLite either.
    op.add_column("executions", sa.Column("actual_monthly_savings", sa.Float(), nullable=True))

    op.create_table(
        "savings_ledger",
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("region", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("estimated_monthly_savings", sa.Float(), nullable=False),
        sa.Column("actual_monthly_savings", sa.Float(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("recorded_at", _ts(), nullable=False),
        sa.Column("reversed_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("execution_id", name=op.f("pk_savings_ledger")),
    )
    op.create_index(op.f("ix_savings_ledger_customer_id"), "savings_ledger", ["customer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_savings_ledger_customer_id"), table_name="savings_ledger")
    op.drop_table("savings_ledger")
    # SQLite before 3.35 cannot drop a column; batch mode rebuilds the table there.
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("actual_monthly_savings")
