"""Savings measurements in the read model, and the accuracy table built from them and the ledger.

A measurement is written by the `SavingsCheck` workflow's activity, keyed by execution id
(taken again, it replaces the first). The accuracy table (`reclaim savings`, the API's
summary) joins each completed change in the savings ledger to its measurement, if any.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.savings import MeasureMethod, SavingsAccuracy, SavingsCheckRow, SavingsMeasurement, accuracy
from store.db import Writes, cancellation_safe
from store.savings import LedgerStatus
from store.tables import Base, SavingsLedgerRow, SavingsMeasurementRow

Insert = Callable[[type[Base]], postgresql.Insert | sqlite.Insert]
_FIELDS = tuple(SavingsMeasurement.model_fields)


class MeasurementRecords:
    def __init__(self, engine: AsyncEngine, writes: Writes, insert: Insert) -> None:
        self._engine = engine
        self._writes = writes
        self._insert = insert

    @cancellation_safe
    async def record(self, measurement: SavingsMeasurement, *, at: datetime | None = None) -> None:
        """Insert, or replace the execution's earlier measurement."""
        values = measurement.model_dump(mode="python") | {"method": measurement.method.value,
                                                          "measured_at": at or datetime.now(UTC)}
        stmt = self._insert(SavingsMeasurementRow).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=[SavingsMeasurementRow.execution_id],
                                          set_={k: stmt.excluded[k] for k in values if k != "execution_id"})
        async with self._writes.begin() as conn:
            await conn.execute(stmt)

    async def get(self, execution_id: str) -> SavingsMeasurement | None:
        found = await self.for_executions([execution_id])
        return found.get(execution_id)

    async def for_executions(self, execution_ids: Collection[str]) -> dict[str, SavingsMeasurement]:
        """The measurements of these executions (those that have one), by execution id."""
        ids, found = sorted(set(execution_ids)), {}
        for start in range(0, len(ids), 500):
            stmt = select(SavingsMeasurementRow.__table__).where(
                SavingsMeasurementRow.execution_id.in_(ids[start:start + 500]))
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
            found.update({r["execution_id"]: _measurement(r) for r in rows})
        return found

    async def list(self, *, customer_ids: Collection[str] | None = None, since: datetime | None = None,
                   limit: int = 100) -> list[SavingsMeasurement]:
        """Newest measurement first; `since` on when the change was made (the period's start)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        stmt = select(SavingsMeasurementRow.__table__).where(*_measurement_filters(customer_ids, since))
        stmt = stmt.order_by(SavingsMeasurementRow.measured_at.desc(), SavingsMeasurementRow.execution_id.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt.limit(limit))).mappings().all()
        return [_measurement(r) for r in rows]

    async def accuracy(self, *, customer_ids: Collection[str] | None = None, since: datetime | None = None,
                       customer_id: str | None = None) -> SavingsAccuracy:
        """Estimated, verified and measured savings per kind and account.

        Every change in the ledger (rolled back ones too: they were promised) with its
        measurement, and measurements of changes the ledger does not hold; `since` on when
        the change completed. `customer_ids` None: every customer (empty: none).
        Read whole (one row per completed change): fine at thousands of changes; a SQL
        aggregate is the follow-up when a tenant has many more.
        """
        ledger, measured = SavingsLedgerRow, SavingsMeasurementRow
        filters: list[ColumnElement[bool]] = []
        if customer_ids is not None:
            filters.append(ledger.customer_id.in_(sorted(customer_ids)))
        if since is not None:
            filters.append(ledger.recorded_at >= since)
        joined = (select(ledger.execution_id, ledger.customer_id, ledger.account_id, ledger.kind,
                         ledger.estimated_monthly_savings, ledger.actual_monthly_savings, ledger.status,
                         ledger.recorded_at, measured.measured_monthly_savings, measured.method)
                  .outerjoin(measured, measured.execution_id == ledger.execution_id).where(*filters))
        alone = (select(measured.__table__)
                 .where(*_measurement_filters(customer_ids, since),
                        measured.execution_id.not_in(select(ledger.execution_id))))
        async with self._engine.connect() as conn:
            rows = [SavingsCheckRow(
                execution_id=r.execution_id, customer_id=r.customer_id, account_id=r.account_id, kind=r.kind,
                estimated_monthly_savings=r.estimated_monthly_savings, verified_monthly_savings=r.actual_monthly_savings,
                measured_monthly_savings=r.measured_monthly_savings,
                method=None if r.method is None else MeasureMethod(r.method),
                reversed=r.status == LedgerStatus.REVERSED.value, completed_at=r.recorded_at,
            ) for r in (await conn.execute(joined)).all()]
            rows += [SavingsCheckRow(
                execution_id=r["execution_id"], customer_id=r["customer_id"], account_id=r["account_id"],
                kind=r["kind"], estimated_monthly_savings=r["estimated_monthly_savings"],
                verified_monthly_savings=r["verified_monthly_savings"],
                measured_monthly_savings=r["measured_monthly_savings"], method=MeasureMethod(r["method"]),
                completed_at=r["period_start"],
            ) for r in (await conn.execute(alone)).mappings().all()]
        return accuracy(sorted(rows, key=lambda r: r.execution_id), customer_id=customer_id, since=since)


def _measurement_filters(customer_ids: Collection[str] | None, since: datetime | None) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if customer_ids is not None:
        filters.append(SavingsMeasurementRow.customer_id.in_(sorted(customer_ids)))
    if since is not None:
        filters.append(SavingsMeasurementRow.period_start >= since)
    return filters


def _measurement(row: Any) -> SavingsMeasurement:
    return SavingsMeasurement.model_validate({k: row[k] for k in _FIELDS})
