"""Plans in the read model: the plan's newest view, its items, their outcomes and the final report.

Items are written once by whoever submits the plan, then updated by the plan
workflow's activities. Every update is idempotent (keyed by plan and position;
the plan row only moves to a higher `sequence`), so retried activities are harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.execution import Observation
from domain.manual import MANUAL_KIND, ManualStep
from domain.plan import ItemResult, ItemState, PlanEntry, PlanItem, PlanView
from domain.plan_report import ReportItem
from domain.recommendation import Recommendation
from domain.recovery import LAUNCH_TIMED_KINDS, launch_window
from domain.status import ExecutionStatus
from store.db import Writes, cancellation_safe
from store.tables import Base, ExecutionRow, PlanItemRow, PlanRow, SavingsMeasurementRow

Insert = Callable[[type[Base]], postgresql.Insert | sqlite.Insert]


class PlanExists(Exception):
    """A plan with this id is already stored (a repeated submission, or an id in use)."""


class PlanRecords:
    def __init__(self, engine: AsyncEngine, writes: Writes, insert: Insert) -> None:
        self._engine = engine
        self._writes = writes
        self._insert = insert

    @cancellation_safe
    async def create(self, view: PlanView, waves: list[list[PlanEntry]]) -> None:
        """The plan row and all its items, in one transaction; an existing plan id is refused.

        A manual item's row holds the item (its `kind` is `manual`) where a recommendation's holds
        the recommendation, and belongs to the plan's first customer.
        """
        rows: list[dict[str, Any]] = []
        position = 0
        owner = view.customer_ids[0] if view.customer_ids else ""
        for wave, entries in enumerate(waves):
            for wave_position, entry in enumerate(entries):
                rec = entry if isinstance(entry, Recommendation) else None
                rows.append({
                    "plan_id": view.plan_id, "position": position, "wave": wave, "wave_position": wave_position,
                    "recommendation_id": entry.id, "customer_id": rec.customer_id if rec else owner,
                    "payload": entry.model_dump(mode="json"), "status": ItemState.PENDING.value,
                    "estimated_monthly_savings": rec.estimated_monthly_savings if rec else 0.0, "approved": False,
                })
                position += 1
        async with self._writes.begin() as conn:
            found = await conn.execute(select(PlanRow.plan_id).where(PlanRow.plan_id == view.plan_id))
            if found.first() is not None:
                raise PlanExists(view.plan_id)
            await conn.execute(self._insert(PlanRow).values(**_plan_values(view), report=None))
            for start in range(0, len(rows), 1000):
                await conn.execute(self._insert(PlanItemRow), rows[start:start + 1000])

    @cancellation_safe
    async def upsert(self, view: PlanView) -> bool:
        """Store `view` unless the stored one is as new or newer."""
        values = _plan_values(view)
        insert = self._insert(PlanRow).values(**values, report=None)
        statement = insert.on_conflict_do_update(
            index_elements=[PlanRow.plan_id],
            set_={name: insert.excluded[name] for name in values if name != "plan_id"},
            where=PlanRow.sequence < insert.excluded.sequence,
        ).returning(PlanRow.plan_id)
        async with self._writes.begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def get(self, plan_id: str) -> PlanView | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(PlanRow.view).where(PlanRow.plan_id == plan_id))).first()
        return PlanView.model_validate(row.view) if row else None

    async def list_plans(self, *, customer_ids: Collection[str] | None = None, limit: int = 50) -> list[PlanView]:
        """Newest first; with `customer_ids`, only plans whose every customer is among them."""
        query = select(PlanRow.view, PlanRow.customer_ids).order_by(PlanRow.started_at.desc()).limit(
            limit if customer_ids is None else limit * 4
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        allowed = None if customer_ids is None else set(customer_ids)
        views = [PlanView.model_validate(r.view) for r in rows
                 if allowed is None or set(r.customer_ids.split(",")) <= allowed]
        return views[:limit]

    async def page(self, plan_id: str, wave: int, offset: int, limit: int, approved_only: bool,
                   positions: Collection[int] | None = None) -> list[PlanItem]:
        """A wave's items from `offset`, or (`positions`) exactly those items, in the wave's order."""
        query = (
            select(PlanItemRow.position, PlanItemRow.wave, PlanItemRow.payload, PlanItemRow.observed)
            .where(PlanItemRow.plan_id == plan_id, PlanItemRow.wave == wave)
            .order_by(PlanItemRow.wave_position)
        )
        if positions is not None:
            query = query.where(PlanItemRow.position.in_(list(positions)))
        else:
            query = query.offset(offset).limit(limit)
        if approved_only:
            query = query.where(PlanItemRow.approved.is_(True))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            PlanItem(position=r.position, wave=r.wave, **_entry(r.payload),
                     expected=Observation.model_validate(r.observed) if approved_only and r.observed else None)
            for r in rows
        ]

    @cancellation_safe
    async def record(self, results: list[ItemResult], dry_run: bool) -> None:
        """Outcomes of items; a dry run's verdict and observation are kept for its approval."""
        async with self._writes.begin() as conn:
            for result in results:
                values: dict[str, Any] = {
                    "status": result.status, "reason": result.reason, "execution_id": result.execution_id,
                    "actual_monthly_savings": result.actual_monthly_savings,
                    "started_at": result.started_at, "finished_at": result.finished_at,
                }
                if dry_run:
                    values.update(dry_run_status=result.status, dry_run_reason=result.reason,
                                  observed=result.observed.model_dump(mode="json") if result.observed else None)
                await conn.execute(
                    update(PlanItemRow)
                    .where(PlanItemRow.plan_id == result.plan_id, PlanItemRow.position == result.position)
                    .values(**values)
                )

    @cancellation_safe
    async def mark_wave(self, plan_id: str, wave: int, status: ItemState, reason: str, approved_only: bool) -> int:
        """Items of a wave that never started (skipped, aborted): one statement, however many."""
        statement = (
            update(PlanItemRow)
            .where(PlanItemRow.plan_id == plan_id, PlanItemRow.wave == wave,
                   PlanItemRow.status == ItemState.PENDING.value)
            .values(status=status.value, reason=reason)
        )
        if approved_only:
            statement = statement.where(PlanItemRow.approved.is_(True))
        async with self._writes.begin() as conn:
            return (await conn.execute(statement)).rowcount or 0

    @cancellation_safe
    async def approve(self, plan_id: str, recommendation_ids: Collection[str] | None) -> dict[int, int]:
        """Mark exactly the approved set (planned in the dry run, and in the subset if one is given).

        Every other item becomes NOT_APPROVED. Returns the approved count per wave.
        """
        planned = PlanItemRow.dry_run_status == ExecutionStatus.PLANNED.value
        chosen = planned if recommendation_ids is None else planned & PlanItemRow.recommendation_id.in_(
            list(recommendation_ids))
        async with self._writes.begin() as conn:
            await conn.execute(
                update(PlanItemRow).where(PlanItemRow.plan_id == plan_id).values(
                    approved=case((chosen, True), else_=False),
                    status=case((chosen, ItemState.PENDING.value), else_=ItemState.NOT_APPROVED.value),
                    reason=case((chosen, None), else_=PlanItemRow.dry_run_reason),
                    execution_id=None, started_at=None, finished_at=None, actual_monthly_savings=None,
                )
            )
            rows = (await conn.execute(
                select(PlanItemRow.wave, func.count()).where(PlanItemRow.plan_id == plan_id,
                                                             PlanItemRow.approved.is_(True))
                .group_by(PlanItemRow.wave)
            )).all()
        return {int(r[0]): int(r[1]) for r in rows}

    async def planned_ids(self, plan_id: str) -> set[str]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(PlanItemRow.recommendation_id).where(
                    PlanItemRow.plan_id == plan_id, PlanItemRow.dry_run_status == ExecutionStatus.PLANNED.value)
            )).all()
        return {r[0] for r in rows}

    async def items(self, plan_id: str) -> list[ReportItem]:
        """Every item, with its execution's current status from the executions read model and its
        measured savings, if a savings check has measured them (read now, not when the plan ended)."""
        query = (
            select(PlanItemRow, ExecutionRow.status.label("current_status"),
                   SavingsMeasurementRow.measured_monthly_savings, SavingsMeasurementRow.method)
            .outerjoin(ExecutionRow, ExecutionRow.execution_id == PlanItemRow.execution_id)
            .outerjoin(SavingsMeasurementRow, SavingsMeasurementRow.execution_id == PlanItemRow.execution_id)
            .where(PlanItemRow.plan_id == plan_id)
            .order_by(PlanItemRow.position)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return await self._launch_windows([
            ReportItem(
                position=r.position, wave=r.wave, **_entry(r.payload),
                status=r.status, reason=r.reason, execution_id=r.execution_id,
                estimated_monthly_savings=r.estimated_monthly_savings,
                actual_monthly_savings=r.actual_monthly_savings, started_at=r.started_at,
                finished_at=r.finished_at, dry_run_status=r.dry_run_status, dry_run_reason=r.dry_run_reason,
                approved=r.approved, current_status=r.current_status,
                measured_monthly_savings=r.measured_monthly_savings, measurement_method=r.method,
            )
            for r in rows
        ])

    async def _launch_windows(self, items: list[ReportItem]) -> list[ReportItem]:
        """Drills' launch request and launch instants, from their executions' logs, and each server's
        launch, from their views' `launches` (the report's recovery time)."""
        ids = [i.execution_id for i in items if i.execution_id and i.recommendation is not None
               and i.recommendation.kind in LAUNCH_TIMED_KINDS]
        windows, launches = {}, {}
        for start in range(0, len(ids), 500):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(ExecutionRow.execution_id, ExecutionRow.view).where(
                    ExecutionRow.execution_id.in_(ids[start:start + 500])))).all()
            windows.update({r.execution_id: launch_window(r.view.get("log") or []) for r in rows})
            launches.update({r.execution_id: {str(sid): datetime.fromisoformat(str(at))
                                              for sid, at in (r.view.get("launches") or {}).items()} for r in rows})
        for item in items:
            if (window := windows.get(item.execution_id or "")) is not None:
                item.launch_started_at, item.launched_at = window
            item.server_launches = launches.get(item.execution_id or "", {})
        return items

    @cancellation_safe
    async def save_report(self, plan_id: str, report: dict[str, Any]) -> None:
        async with self._writes.begin() as conn:
            await conn.execute(update(PlanRow).where(PlanRow.plan_id == plan_id).values(report=report))

    async def report(self, plan_id: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(PlanRow.report).where(PlanRow.plan_id == plan_id))).first()
        return row.report if row else None


def _entry(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored item's payload as the `recommendation` or `manual` field of a plan item."""
    if payload.get("kind") == MANUAL_KIND:
        return {"manual": ManualStep.model_validate(payload)}
    return {"recommendation": Recommendation.model_validate(payload)}


def _plan_values(view: PlanView) -> dict[str, Any]:
    return {
        "plan_id": view.plan_id,
        "customer_ids": ",".join(sorted(view.customer_ids)),
        "requested_by": view.requested_by,
        "status": view.status.value,
        "sequence": view.sequence,
        "started_at": view.started_at,
        "updated_at": view.updated_at or datetime.now(UTC),
        "finished_at": view.finished_at,
        "view": view.model_dump(mode="json"),
    }
