"""Notifications delivered, by (channel, dedup key): delivery at most once across workers (issue 13).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 14:00:00

Written by hand to match store/tables.py; tests/test_store.py checks that
autogenerate finds no difference. A new table: nothing existing changes.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("result", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_notification_deliveries")),
    )
    op.create_index(op.f("ix_notification_deliveries_delivered_at"), "notification_deliveries", ["delivered_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_notification_deliveries_delivered_at"), table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
