"""`Store`: the read model's one entry point, for activities, the CLI and the API.

Every write is an idempotent upsert, because the writers are Temporal activities
that may be retried or delivered out of order: an execution row only moves to a
higher `sequence`, approvals and recommendations are keyed by their own ids.
The savings ledger is written in the same transaction as the execution row it
follows, and only when that row moved forward.
The same statements run on SQLite (local use, tests) and PostgreSQL (deployments).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.base import StrictModel
from domain.execution import ApprovalRecord, ExecutionView, LastChange
from domain.recommendation import Recommendation
from domain.status import ACTIVE, ExecutionStatus
from domain.sync import Stored, SyncPlan, SyncScope, plan_sync
from store import db
from store.deliveries import DeliveryRecords
from store.measurements import MeasurementRecords
from store.plans import PlanRecords
from store.savings import KindSavings, LedgerStatus, SavingsEntry, SavingsSummary
from store.tables import ApprovalRow, Base, ExecutionRow, RecommendationRow, SavingsLedgerRow, as_utc

#: Status of a recommendation that no execution has picked up yet.
NEW = "NEW"
#: Listing filter: recommendations their source no longer returns (`stale_at` set), whatever their execution.
STALE = "STALE"
#: A recommendation whose latest execution is in one of these is never changed by a re-import.
HOLDING: frozenset[ExecutionStatus] = ACTIVE | {ExecutionStatus.COMPLETED}

#: Statuses after which the resource was (or may have been) changed by Reclaim: what a cooldown counts.
MUTATED: frozenset[ExecutionStatus] = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.ROLLED_BACK, ExecutionStatus.ROLLBACK_FAILED}
)


class ExecutionPage(StrictModel):
    """One page of executions, newest first; pass `next_cursor` back for the next one."""

    total: int
    executions: list[ExecutionView]
    next_cursor: str | None = None


class StoredRecommendation(StrictModel):
    """A recommendation with where it stands: NEW, or the status of its latest execution."""

    recommendation: Recommendation
    status: str
    execution_id: str | None = None
    updated_at: datetime
    stale_at: datetime | None = None


class Store:
    """The SQL read model. Open with `await Store.open(url)`, close with `await store.close()`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.url: str = db.render_url(engine.url)
        self._writes = db.Writes(engine)
        self.plans = PlanRecords(engine, self._writes, self._insert)
        self.measurements = MeasurementRecords(engine, self._writes, self._insert)
        self.deliveries = DeliveryRecords(engine, self._writes, self._insert)

    @classmethod
    async def open(cls, url: str | None = None, *, migrate: bool = True) -> Store:
        """Connect, and by default bring the schema to head (safe from several processes at once)."""
        engine = db.create_engine(db.normalize_url(url))
        if migrate:
            try:
                await db.migrate(engine)
            except BaseException:
                await engine.dispose()
                raise
        return cls(engine)

    async def close(self) -> None:
        """Release the pooled connections (an un-disposed aiosqlite engine can keep the loop alive)."""
        await self._engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    async def ping(self) -> None:
        """Raise if the database cannot answer: for readiness checks."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # -- executions -------------------------------------------------------

    @db.cancellation_safe
    async def upsert_execution(self, view: ExecutionView) -> bool:
        """Store `view` unless a newer (or the same) sequence of the same run, or a later run, is
        already there; True if it landed.

        The sequence check sits in the statement itself (`ON CONFLICT … DO UPDATE
        … WHERE stored.sequence < new.sequence`), so concurrent writers cannot race
        between a read and a write. Approvals carried by the view are inserted if
        new, whether or not the view itself was stale: they are facts, not state.

        When the row moved forward, the savings ledger follows in the same
        transaction (see `_record_savings`); a stale or repeated view leaves it alone.
        """
        async with self._writes.begin() as conn:
            changed = (await conn.execute(self._execution_upsert, _execution_values(view))).first() is not None
            if changed:
                await self._record_savings(conn, view)
            await self._insert_approvals(conn, view.approvals)
        return changed

    @db.cancellation_safe
    async def record_approval(self, record: ApprovalRecord) -> None:
        """Keep one decision attempt (refused ones never reach a view); a repeat of the same id is a no-op."""
        async with self._writes.begin() as conn:
            await self._insert_approvals(conn, [record])

    async def get_execution(self, execution_id: str) -> ExecutionView | None:
        async with self._engine.connect() as conn:
            view = await conn.scalar(select(ExecutionRow.view).where(ExecutionRow.execution_id == execution_id))
        return None if view is None else ExecutionView.model_validate(view)

    async def list_executions(
        self,
        *,
        customer_id: str | None = None,
        customer_ids: Collection[str] | None = None,
        status: ExecutionStatus | str | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Newest first by (started_at, execution_id), keyset-paged so pages stay stable while rows arrive.

        Raises ValueError for a limit below 1, an unknown status or a cursor this method did not issue.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        filters: list[ColumnElement[bool]] = []
        if customer_id is not None:
            filters.append(ExecutionRow.customer_id == customer_id)
        if customer_ids is not None:  # a tenant's set (empty: sees nothing)
            filters.append(ExecutionRow.customer_id.in_(sorted(customer_ids)))
        if status is not None:
            filters.append(ExecutionRow.status == _execution_status(status))
        if kind is not None:
            filters.append(ExecutionRow.kind == kind)
        page = select(ExecutionRow.view, ExecutionRow.started_at, ExecutionRow.execution_id).where(*filters)
        if cursor is not None:
            at, execution_id = decode_cursor(cursor)
            page = page.where(
                or_(
                    ExecutionRow.started_at < at,
                    and_(ExecutionRow.started_at == at, ExecutionRow.execution_id < execution_id),
                )
            )
        page = page.order_by(ExecutionRow.started_at.desc(), ExecutionRow.execution_id.desc()).limit(limit + 1)
        count = select(func.count()).select_from(ExecutionRow).where(*filters)
        async with self._engine.connect() as conn:
            total = int(await conn.scalar(count) or 0)
            rows = (await conn.execute(page)).all()
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last.started_at, last.execution_id)
        return ExecutionPage(
            total=total,
            executions=[ExecutionView.model_validate(r.view) for r in rows[:limit]],
            next_cursor=next_cursor,
        )

    async def list_approvals(self, execution_id: str) -> list[ApprovalRecord]:
        """The audit trail of one execution, oldest first."""
        stmt = (
            select(ApprovalRow.__table__)
            .where(ApprovalRow.execution_id == execution_id)
            .order_by(ApprovalRow.at, ApprovalRow.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [ApprovalRecord.model_validate(dict(r)) for r in rows]

    async def last_change(
        self, account_id: str, region: str, resource_id: str, *, exclude_execution_id: str | None = None
    ) -> LastChange | None:
        """The newest execution that changed this resource (COMPLETED, ROLLED_BACK or ROLLBACK_FAILED).

        Newest by when the change finished (`finished_at`; a completed execution keeps
        updating its row during the rollback window, which must not extend the cooldown);
        `exclude_execution_id` leaves out the asking execution. None when never changed.
        """
        changed_at = func.coalesce(ExecutionRow.finished_at, ExecutionRow.updated_at).label("changed_at")
        stmt = select(ExecutionRow.execution_id, ExecutionRow.status, changed_at).where(
            ExecutionRow.resource_id == resource_id,
            ExecutionRow.account_id == account_id,
            ExecutionRow.region == region,
            ExecutionRow.status.in_(sorted(s.value for s in MUTATED)),
        )
        if exclude_execution_id is not None:
            stmt = stmt.where(ExecutionRow.execution_id != exclude_execution_id)
        stmt = stmt.order_by(changed_at.desc(), ExecutionRow.execution_id.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return LastChange(
            execution_id=row.execution_id, status=ExecutionStatus(row.status), at=as_utc(row.changed_at)
        )

    # -- savings ----------------------------------------------------------

    async def savings_summary(self, *, customer_id: str | None = None) -> SavingsSummary:
        """Totals of the ledger for one customer, or for all when `customer_id` is None."""
        stmt = select(
            SavingsLedgerRow.status,
            SavingsLedgerRow.kind,
            func.count().label("executions"),
            func.sum(SavingsLedgerRow.estimated_monthly_savings).label("estimated"),
            func.sum(SavingsLedgerRow.actual_monthly_savings).label("actual"),
        ).group_by(SavingsLedgerRow.status, SavingsLedgerRow.kind)
        if customer_id is not None:
            stmt = stmt.where(SavingsLedgerRow.customer_id == customer_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(SavingsLedgerRow.kind, SavingsLedgerRow.status))).all()
        summary = SavingsSummary(customer_id=customer_id)
        for r in rows:
            count, estimated, actual = int(r.executions), float(r.estimated or 0.0), float(r.actual or 0.0)
            if r.status == LedgerStatus.REVERSED:
                summary.reversed += count
                summary.reversed_actual_monthly += actual
                continue
            summary.executions += count
            summary.estimated_monthly += estimated
            summary.actual_monthly += actual
            summary.by_kind[r.kind] = KindSavings(estimated_monthly=estimated, actual_monthly=actual, executions=count)
        return summary

    async def list_savings(self, *, customer_id: str | None = None, limit: int = 100) -> list[SavingsEntry]:
        """Ledger entries, ACTIVE and REVERSED, newest `recorded_at` first."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        stmt = select(SavingsLedgerRow.__table__)
        if customer_id is not None:
            stmt = stmt.where(SavingsLedgerRow.customer_id == customer_id)
        stmt = stmt.order_by(SavingsLedgerRow.recorded_at.desc(), SavingsLedgerRow.execution_id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [SavingsEntry.model_validate(dict(r)) for r in rows]

    # -- recommendations --------------------------------------------------

    @db.cancellation_safe
    async def save_recommendations(self, recs: list[Recommendation]) -> int:
        """Insert or replace each recommendation by id; returns how many distinct ids were written.

        `created_at` is the recommender's when it gave one, else the time of the
        first save; a re-save without one keeps the stored value.
        """
        latest = {rec.id: rec for rec in recs}  # a batch may repeat an id: the last one wins
        if not latest:
            return 0
        now = datetime.now(UTC)
        dated = [_recommendation_values(r, now) for r in latest.values() if r.created_at is not None]
        undated = [_recommendation_values(r, now) for r in latest.values() if r.created_at is None]
        async with self._writes.begin() as conn:
            for rows, keep in ((dated, ()), (undated, ("created_at",))):
                if not rows:
                    continue
                stmt = self._insert(RecommendationRow)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[RecommendationRow.id],
                    set_={name: stmt.excluded[name] for name in rows[0] if name not in ("id", *keep)},
                )
                await conn.execute(stmt, rows)
        return len(latest)

    async def get_recommendation(self, rec_id: str) -> Recommendation | None:
        async with self._engine.connect() as conn:
            payload = await conn.scalar(select(RecommendationRow.payload).where(RecommendationRow.id == rec_id))
        return None if payload is None else Recommendation.model_validate(payload)

    async def list_recommendations(
        self, *, customer_id: str | None = None, status: str | None = None, limit: int = 100,
        source: str | None = None,
    ) -> list[StoredRecommendation]:
        """Newest `created_at` first; `status` is NEW (no execution, not stale), STALE (its source no
        longer returns it), or an execution status matched against the latest execution."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        stmt = _recommendations_with_status()
        if customer_id is not None:
            stmt = stmt.where(RecommendationRow.customer_id == customer_id)
        if source is not None:
            stmt = stmt.where(RecommendationRow.source == source)
        if status is not None:
            wanted = status.strip().upper()
            if wanted == STALE:
                stmt = stmt.where(RecommendationRow.stale_at.is_not(None))
            elif wanted == NEW:
                stmt = stmt.where(ExecutionRow.status.is_(None), RecommendationRow.stale_at.is_(None))
            else:
                stmt = stmt.where(ExecutionRow.status == _execution_status(status))
        stmt = stmt.order_by(RecommendationRow.created_at.desc(), RecommendationRow.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_stored(r) for r in rows]

    async def recommendation_state(self, rec_id: str) -> StoredRecommendation | None:
        """One recommendation with its status and whether it is stale; None when not stored."""
        stmt = _recommendations_with_status().where(RecommendationRow.id == rec_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _stored(row)

    @db.cancellation_safe
    async def sync_recommendations(self, recs: list[Recommendation], scope: SyncScope) -> SyncPlan:
        """Keep a source's recommendations current (`domain.sync.plan_sync`): new ones inserted,
        changed ones updated in place (fresh again if they were stale), unchanged ones not written,
        the ones in `scope` no longer returned marked stale; none held by an execution is touched.
        Read and written in one transaction."""
        ids = sorted({r.id for r in recs})
        now = datetime.now(UTC)
        async with self._writes.begin() as conn:
            in_scope = and_(RecommendationRow.source == scope.source,
                            RecommendationRow.customer_id == scope.customer_id)
            wanted = or_(in_scope, RecommendationRow.id.in_(ids)) if ids else in_scope
            rows = (await conn.execute(_recommendations_with_status().where(wanted))).all()
            stored = [Stored(recommendation=Recommendation.model_validate(r.payload), stale=r.stale_at is not None,
                             held=r.status is not None and ExecutionStatus(r.status) in HOLDING) for r in rows]
            plan = plan_sync(recs, stored, scope)
            for dated in (True, False):  # undated ones keep the time of their first save
                values = [_recommendation_values(r, now) | {"stale_at": None}
                          for r in plan.write if (r.created_at is not None) == dated]
                if not values:
                    continue
                stmt = self._insert(RecommendationRow)
                keep = ("id",) if dated else ("id", "created_at")
                stmt = stmt.on_conflict_do_update(
                    index_elements=[RecommendationRow.id],
                    set_={name: stmt.excluded[name] for name in values[0] if name not in keep},
                )
                await conn.execute(stmt, values)
            if plan.mark_stale:
                await conn.execute(update(RecommendationRow).where(RecommendationRow.id.in_(plan.mark_stale))
                                   .values(stale_at=now, updated_at=now))
        return plan

    # -- helpers ----------------------------------------------------------

    @functools.cached_property
    def _execution_upsert(self) -> Any:
        """Built once: `insert.excluded` builds a proxy of every column each time it is made, which
        cost a worker 7% of its CPU when it was made per write (py-spy, `make bench`)."""
        insert = self._insert(ExecutionRow)
        columns = [c.name for c in ExecutionRow.__table__.columns if c.name != "execution_id"]
        return insert.on_conflict_do_update(
            index_elements=[ExecutionRow.execution_id],
            set_={name: insert.excluded[name] for name in columns},
            # A later run of the same id (a repeated dry run) wins whatever its sequence; within a
            # run, the higher sequence does.
            where=or_(ExecutionRow.started_at < insert.excluded.started_at,
                      and_(ExecutionRow.started_at == insert.excluded.started_at,
                           ExecutionRow.sequence < insert.excluded.sequence)),
        ).returning(ExecutionRow.execution_id)  # no row back: the stored one was as new or newer

    def _insert(self, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, the one that knows ON CONFLICT."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _record_savings(self, conn: AsyncConnection, view: ExecutionView) -> None:
        """Move the ledger along with a view that just landed; every step is idempotent.

        COMPLETED with a verified figure adds the ACTIVE row (if absent: a later
        COMPLETED view, e.g. a log line, keeps the first figure and time).
        ROLLED_BACK turns an ACTIVE row REVERSED. Views are written without waiting,
        so the COMPLETED one may have lost the race to this ROLLED_BACK one (and,
        being older, can no longer land): when the view's log shows it completed,
        the row is created REVERSED right away, dated as the COMPLETED write would have.
        """
        if view.status is ExecutionStatus.COMPLETED:
            if view.actual_monthly_savings is None or view.dry_run:
                return
            values = _ledger_values(view, view.actual_monthly_savings, LedgerStatus.ACTIVE, view.updated_at)
            insert = self._insert(SavingsLedgerRow).values(**values)
            await conn.execute(insert.on_conflict_do_nothing(index_elements=[SavingsLedgerRow.execution_id]))
        elif view.status is ExecutionStatus.ROLLED_BACK:
            await conn.execute(
                update(SavingsLedgerRow)
                .where(
                    SavingsLedgerRow.execution_id == view.execution_id,
                    SavingsLedgerRow.status == LedgerStatus.ACTIVE.value,
                )
                .values(status=LedgerStatus.REVERSED.value, reversed_at=view.updated_at)
            )
            completed_at = _completed_at(view)
            if completed_at is None or view.actual_monthly_savings is None or view.dry_run:
                return
            values = _ledger_values(
                view, view.actual_monthly_savings, LedgerStatus.REVERSED, completed_at, reversed_at=view.updated_at
            )
            insert = self._insert(SavingsLedgerRow).values(**values)
            await conn.execute(insert.on_conflict_do_nothing(index_elements=[SavingsLedgerRow.execution_id]))

    async def _insert_approvals(self, conn: AsyncConnection, records: list[ApprovalRecord]) -> None:
        """Insert-if-absent, in id order so concurrent writers take row locks in the same order."""
        if not records:
            return
        rows = [_approval_values(r) for r in sorted({r.id: r for r in records}.values(), key=lambda r: r.id)]
        stmt = self._insert(ApprovalRow).on_conflict_do_nothing(index_elements=[ApprovalRow.id])
        await conn.execute(stmt, rows)


def _execution_status(status: ExecutionStatus | str) -> str:
    if isinstance(status, ExecutionStatus):
        return status.value
    return ExecutionStatus(status.strip().upper()).value


def _execution_values(view: ExecutionView) -> dict[str, Any]:
    return {
        "execution_id": view.execution_id,
        "recommendation_id": view.recommendation_id,
        "customer_id": view.customer_id,
        "account_id": view.account_id,
        "region": view.region,
        "kind": view.kind,
        "resource_id": view.resource_id,
        "status": view.status.value,
        "risk": None if view.risk is None else view.risk.value,
        "requested_by": view.requested_by,
        "dry_run": view.dry_run,
        "estimated_monthly_savings": view.estimated_monthly_savings,
        "actual_monthly_savings": view.actual_monthly_savings,
        "sequence": view.sequence,
        "started_at": view.started_at,
        "updated_at": view.updated_at,
        "finished_at": view.finished_at,
        "view": view.model_dump(mode="json"),
    }


def _ledger_values(
    view: ExecutionView,
    actual: float,
    status: LedgerStatus,
    recorded_at: datetime,
    *,
    reversed_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "execution_id": view.execution_id,
        "customer_id": view.customer_id,
        "account_id": view.account_id,
        "region": view.region,
        "kind": view.kind,
        "resource_id": view.resource_id,
        "estimated_monthly_savings": view.estimated_monthly_savings,
        "actual_monthly_savings": actual,
        "status": status.value,
        "recorded_at": recorded_at,
        "reversed_at": reversed_at,
    }


def _completed_at(view: ExecutionView) -> datetime | None:
    """When the view's log says the execution reached COMPLETED; None if it never did."""
    return min((e.at for e in view.log if e.status is ExecutionStatus.COMPLETED), default=None)


def _approval_values(record: ApprovalRecord) -> dict[str, Any]:
    values = record.model_dump(mode="python")
    values["role"] = record.role.value
    values["decision"] = record.decision.value
    return values


def _stored(r: Any) -> StoredRecommendation:
    return StoredRecommendation(
        recommendation=Recommendation.model_validate(r.payload),
        status=r.status or NEW,
        execution_id=r.execution_id,
        updated_at=max(r.rec_updated_at, r.exec_updated_at or r.rec_updated_at),
        stale_at=r.stale_at,
    )


def _recommendation_values(rec: Recommendation, now: datetime) -> dict[str, Any]:
    return {
        "id": rec.id,
        "customer_id": rec.customer_id,
        "account_id": rec.account_id,
        "region": rec.region,
        "kind": rec.kind,
        "resource_id": rec.resource_id,
        "estimated_monthly_savings": rec.estimated_monthly_savings,
        "source": rec.source,
        "payload": rec.model_dump(mode="json"),
        "created_at": rec.created_at or now,
        "updated_at": now,
    }


def _recommendations_with_status() -> Select[Any]:
    """Each recommendation joined to its latest execution, if any (a re-run makes a second one)."""
    latest = (
        select(ExecutionRow.execution_id)
        .where(ExecutionRow.recommendation_id == RecommendationRow.id)
        .order_by(ExecutionRow.started_at.desc(), ExecutionRow.execution_id.desc())
        .limit(1)
        .correlate(RecommendationRow)
        .scalar_subquery()
    )
    return select(
        RecommendationRow.payload,
        RecommendationRow.updated_at.label("rec_updated_at"),
        RecommendationRow.stale_at,
        ExecutionRow.status,
        ExecutionRow.execution_id,
        ExecutionRow.updated_at.label("exec_updated_at"),
    ).outerjoin(ExecutionRow, ExecutionRow.execution_id == latest)


def encode_cursor(started_at: datetime, execution_id: str) -> str:
    """Opaque to callers; base64 of the last row's sort key, so the next page starts right after it."""
    raw = json.dumps([as_utc(started_at).isoformat(), execution_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, execution_id = json.loads(raw)
        return as_utc(datetime.fromisoformat(at)), str(execution_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
