"""The read model's tables: a queryable copy of what Temporal already knows.

Temporal's history is the source of truth; these rows exist so the CLI and API
can filter, sort and page without asking every workflow for its state. Each
executions row keeps the whole `ExecutionView` as JSON next to the columns that
are filtered on, so a new field in the view needs no migration.

Changing anything here needs a new Alembic revision in `store/migrations/versions`;
`tests/test_store.py` fails while the migrated schema and this metadata differ.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Float, Index, Integer, MetaData, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Deterministic constraint and index names, so later migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Plain JSON everywhere, JSONB on PostgreSQL (indexable, compact).
JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware in, UTC-aware out, on every backend.

    SQLite has no timezone type: SQLAlchemy writes the wall-clock fields and drops
    the offset, so a `+02:00` value would be stored two hours off and sort wrongly.
    Converting to UTC before writing keeps stored values comparable (the keyset
    cursor relies on that); tagging naive results as UTC on read gives callers the
    same aware datetimes PostgreSQL returns. A naive input is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON_DOCUMENT}


class RecommendationRow(Base):
    """One recommendation as last submitted; `payload` is `Recommendation.model_dump(mode="json")`."""

    __tablename__ = "recommendations"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String, index=True)
    account_id: Mapped[str] = mapped_column(String)
    region: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    resource_id: Mapped[str] = mapped_column(String)
    estimated_monthly_savings: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    stale_at: Mapped[datetime | None] = mapped_column(
        doc="When a re-import or re-scan of its source no longer returned it; None while current.")

    # A sync reads one source's recommendations of one customer (domain/sync.py).
    __table_args__ = (Index("ix_recommendations_source_customer", "source", "customer_id"),)


class ExecutionRow(Base):
    """The newest known state of one execution; `view` is `ExecutionView.model_dump(mode="json")`.

    `sequence` orders the writes: an upsert only lands when it is newer, so
    retried or reordered activity calls cannot move an execution back in time.
    """

    __tablename__ = "executions"

    execution_id: Mapped[str] = mapped_column(String, primary_key=True)
    recommendation_id: Mapped[str] = mapped_column(String, index=True)
    customer_id: Mapped[str] = mapped_column(String, index=True)
    account_id: Mapped[str] = mapped_column(String)
    region: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String, index=True)
    resource_id: Mapped[str] = mapped_column(String, index=True)
    status: Mapped[str] = mapped_column(String, index=True)
    risk: Mapped[str | None] = mapped_column(String)
    requested_by: Mapped[str] = mapped_column(String)
    dry_run: Mapped[bool] = mapped_column(Boolean)
    estimated_monthly_savings: Mapped[float] = mapped_column(Float)
    actual_monthly_savings: Mapped[float | None] = mapped_column(Float)
    sequence: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    view: Mapped[dict[str, Any]]

    # Keyset pages (newest first) of one customer, optionally in one status, read off one index:
    # the API's list at 100,000 rows (`make bench`) without sorting or bitmap-AND-ing two indexes.
    __table_args__ = (
        Index("ix_executions_customer_started", "customer_id", "started_at", "execution_id"),
        Index("ix_executions_customer_status_started", "customer_id", "status", "started_at", "execution_id"),
    )


class ApprovalRow(Base):
    """One approval decision attempt, accepted or refused: the audit trail outlives the workflow."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    execution_id: Mapped[str] = mapped_column(String, index=True)
    actor: Mapped[str] = mapped_column(String)
    role: Mapped[str] = mapped_column(String)
    decision: Mapped[str] = mapped_column(String)
    comment: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    accepted: Mapped[bool] = mapped_column(Boolean)
    refusal: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str] = mapped_column(String)


class SavingsLedgerRow(Base):
    """Savings a completed change delivers: one row per execution, written by `Store.upsert_execution`.

    A row appears (ACTIVE) when a completed, verified execution reports its actual
    savings, and turns REVERSED when that execution is rolled back. Rows are never
    deleted, so the ledger shows both what is saved now and what was given back.
    """

    __tablename__ = "savings_ledger"

    execution_id: Mapped[str] = mapped_column(String, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String, index=True)
    account_id: Mapped[str] = mapped_column(String)
    region: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    resource_id: Mapped[str] = mapped_column(String)
    estimated_monthly_savings: Mapped[float] = mapped_column(Float)
    actual_monthly_savings: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String)
    recorded_at: Mapped[datetime]
    reversed_at: Mapped[datetime | None]


class PlanRow(Base):
    """The newest known state of one plan; `view` is `PlanView.model_dump(mode="json")`.

    `report` is filled once the plan ends: the JSON report, kept so it can be fetched later.
    """

    __tablename__ = "plans"

    plan_id: Mapped[str] = mapped_column(String, primary_key=True)
    customer_ids: Mapped[str] = mapped_column(Text, doc="Comma-separated, sorted; for tenant filtering.")
    requested_by: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    view: Mapped[dict[str, Any]]
    report: Mapped[dict[str, Any] | None]


class PlanItemRow(Base):
    """One recommendation of a plan: its place (wave, position), the dry run's verdict and the outcome.

    The plan workflow reads its items from here page by page, so a 10,000-item plan
    never carries its recommendations in its own history.
    """

    __tablename__ = "plan_items"

    plan_id: Mapped[str] = mapped_column(String, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    wave_position: Mapped[int] = mapped_column(Integer)
    recommendation_id: Mapped[str] = mapped_column(String)
    customer_id: Mapped[str] = mapped_column(String)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String)
    reason: Mapped[str | None] = mapped_column(Text)
    execution_id: Mapped[str | None] = mapped_column(String)
    estimated_monthly_savings: Mapped[float] = mapped_column(Float)
    actual_monthly_savings: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    dry_run_status: Mapped[str | None] = mapped_column(String)
    dry_run_reason: Mapped[str | None] = mapped_column(Text)
    observed: Mapped[dict[str, Any] | None]
    approved: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (Index("ix_plan_items_plan_id_wave", "plan_id", "wave", "wave_position"),)


class SavingsMeasurementRow(Base):
    """What a completed change saved, measured a while after it (`domain.savings.SavingsMeasurement`).

    One row per execution, written by the `SavingsCheck` workflow's `measure_savings`; a
    measurement taken again replaces it. `evidence` is the list of sentences saying how.
    """

    __tablename__ = "savings_measurements"

    execution_id: Mapped[str] = mapped_column(String, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String, index=True)
    account_id: Mapped[str] = mapped_column(String)
    region: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    resource_id: Mapped[str] = mapped_column(String)
    estimated_monthly_savings: Mapped[float] = mapped_column(Float)
    verified_monthly_savings: Mapped[float | None] = mapped_column(Float)
    measured_monthly_savings: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String)
    evidence: Mapped[list[str]] = mapped_column(JSON_DOCUMENT)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    measured_at: Mapped[datetime]


class NotificationDeliveryRow(Base):
    """A notification delivered to a channel, by its (channel, dedup key): the guard that keeps a
    delivery retried on another worker from posting again (`activities/notify/delivery.py`).
    `result` is the `DeliveryResult` as JSON (never a secret: channels keep those out of it)."""

    __tablename__ = "notification_deliveries"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON_DOCUMENT)
    delivered_at: Mapped[datetime] = mapped_column(index=True)
