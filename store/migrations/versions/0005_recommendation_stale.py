"""Recommendations a re-import or re-scan no longer returns are marked stale.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 00:00:00

Written by hand to match store/tables.py; tests/test_store.py checks that
autogenerate finds no difference.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # A nullable column needs no table rebuild, on SQLite either.
    op.add_column("recommendations", sa.Column("stale_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_recommendations_source_customer", "recommendations", ["source", "customer_id"])


def downgrade() -> None:
    op.drop_index("ix_recommendations_source_customer", table_name="recommendations")
    with op.batch_alter_table("recommendations") as batch:
        batch.drop_column("stale_at")
