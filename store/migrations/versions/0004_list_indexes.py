"""Composite indexes for listing one customer's executions, newest first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00

Written by hand to match store/tables.py; tests/test_store.py checks that
autogenerate finds no difference.
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_executions_customer_started", "executions", ["customer_id", "started_at", "execution_id"])
    op.create_index("ix_executions_customer_status_started", "executions",
                    ["customer_id", "status", "started_at", "execution_id"])


def downgrade() -> None:
    op.drop_index("ix_executions_customer_status_started", table_name="executions")
    op.drop_index("ix_executions_customer_started", table_name="executions")
