"""An import or scan as activities of `ImportWorkflow`: gather from the source, keep the read model
current (`Store.sync_recommendations`, as `reclaim import --save` does), and store a dry-run plan of
the NEW recommendations for the workflow to start.

`gather_import` and `import_scope` are also what `reclaim import` runs in its own process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from pydantic import Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import SessionFactory
from activities.sources import SourceError, SourceFilters, checked, import_live, narrowed
from activities.sources.file import read
from activities.sources.scanner import ScanRequest, scan
from activities.store_errors import store_call
from domain.base import StrictModel
from domain.execution import ExecutionOptions
from domain.imports import ImportInput, ImportResult, ImportSource, import_counts
from domain.plan import PlanInput, PlanSpec, PlanView, WaveProgress, build_waves
from domain.recommendation import Recommendation
from domain.scan import SCANNER, Thresholds
from domain.sources import COH, COMPUTE_OPTIMIZER, TRUSTED_ADVISOR, ImportContext, ImportReport, import_report
from domain.sync import SyncScope
from store.plans import PlanExists
from store.repository import NEW, Store

#: An import source -> the registered live source (activities/sources); scan and file read otherwise.
LIVE = {ImportSource.COH: COH, ImportSource.CO: COMPUTE_OPTIMIZER, ImportSource.TA: TRUSTED_ADVISOR}
#: Error type of a source's refusal (not enrolled, access denied, unreadable file): not retried.
SOURCE_ERROR = "SourceError"


def default_region() -> str | None:
    """The AWS configuration's region of this process."""
    return boto3.Session().region_name


def gather_import(sessions: SessionFactory, live: str | None, file: Path | None, filters: SourceFilters,
                  ctx: ImportContext, region: str | None) -> ImportReport:
    """One import's report: a live source by its registered name, or (live None) a saved file. SourceError
    (one line) for what a person must fix."""
    if live is None:
        if file is None:
            raise SourceError("a file import needs the saved output of the AWS CLI")
        source, items = read(file)
        return checked(narrowed(import_report(source, items, ctx), filters))
    return import_live(sessions, live, filters, ctx, region)


def import_scope(live: str | None, report: ImportReport, filters: SourceFilters, customer: str,
                 region: str | None) -> SyncScope:
    """What the import asked its source about: a stored one inside it and not returned goes stale. A
    saved file may hold part of the source's answer, so nothing goes stale on a file import."""
    regions = filters.regions or ([region] if region and live == COMPUTE_OPTIMIZER else [])
    return SyncScope(source=report.source, customer_id=customer, account_ids=filters.account_ids, regions=regions,
                     complete=live is not None)


class ImportOutcome(StrictModel):
    result: ImportResult


class PlanRequest(StrictModel):
    """Store a dry-run plan of these NEW recommendations (largest savings first), id `plan_id`."""

    plan_id: str
    input: ImportInput
    candidates: list[str] = Field(default_factory=list)


class ImportActivities:
    """`sessions`: the worker's way to AWS; `clock`: the scanner's (tests move it)."""

    def __init__(self, sessions: SessionFactory, store: Store,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.sessions = sessions
        self.store = store
        self.clock = clock

    def _gather(self, req: ImportInput) -> tuple[ImportReport, SyncScope]:
        region = default_region()
        filters = SourceFilters(account_ids=req.account_ids, regions=req.regions)
        if req.source is ImportSource.SCAN:
            from activities.actions.base import registry

            regions = req.regions or [r for r in [region] if r]
            if not regions:
                raise SourceError("name a region to scan (the worker has no AWS region configured)")
            thresholds = Thresholds(**({"lookback_days": req.lookback_days} if req.lookback_days else {}))
            result = scan(self.sessions, ScanRequest(customer_id=req.customer_id, account_ids=req.account_ids,
                                                     regions=regions, thresholds=thresholds),
                          req.policy, list(registry()), now=self.clock())
            return result.report, SyncScope(source=SCANNER, customer_id=req.customer_id, account_ids=result.accounts,
                                            regions=result.regions, complete=result.complete)
        live = LIVE.get(req.source)
        report = gather_import(self.sessions, live, Path(req.file) if req.file else None, filters,
                               ImportContext(customer_id=req.customer_id), region)
        return report, import_scope(live, report, filters, req.customer_id, region)

    @activity.defn(name="import_recommendations")
    @store_call
    async def import_recommendations(self, req: ImportInput) -> ImportOutcome:
        """Gather (boto3, in a thread) and keep the read model current; the NEW ones, largest savings first."""
        try:
            report, scope = await asyncio.to_thread(self._gather, req)
        except SourceError as exc:
            raise ApplicationError(str(exc), type=SOURCE_ERROR, non_retryable=True) from None
        synced = await self.store.sync_recommendations(report.recommendations, scope)
        returned = {r.id for r in report.recommendations}
        fresh = await self.store.list_recommendations(customer_id=req.customer_id, status=NEW, source=report.source,
                                                      limit=100_000)
        new = sorted((s.recommendation for s in fresh if s.recommendation.id in returned),
                     key=lambda r: (-r.estimated_monthly_savings, r.id))
        return ImportOutcome(result=ImportResult(
            source=report.source, customer_id=req.customer_id, counts=import_counts(report, synced.counts),
            found=len(report.recommendations), new_ids=[r.id for r in new]))

    @activity.defn(name="store_import_plan")
    @store_call
    async def store_import_plan(self, req: PlanRequest) -> PlanInput | None:
        """Store the dry-run plan (one recommendation per resource, at most `max_items`); None when none of
        the candidates is still NEW. Idempotent: a retry finds the plan it stored."""
        options = req.input.plan
        assert options is not None
        stored = await self.store.plans.get(req.plan_id)
        if stored is None:
            recs = await self._still_new(req)
            if not recs:
                return None
            spec = PlanSpec(id=req.plan_id, name=plan_name(req.input), recommendation_ids=[r.id for r in recs],
                            strategy=options.strategy, dry_run=True)
            waves, grouped = build_waves(spec, recs)
            now = datetime.now(UTC)
            stored = PlanView(
                plan_id=req.plan_id, name=spec.name, customer_ids=[req.input.customer_id],
                requested_by=req.input.requested_by, phase="dry_run", dry_run=True, strategy=spec.strategy,
                rate=spec.rate, total=len(recs), started_at=now, updated_at=now,
                waves=[WaveProgress(**w.model_dump()) for w in waves],
                estimated_monthly_savings=round(sum(r.estimated_monthly_savings for r in recs), 2))
            try:
                await self.store.plans.create(stored, grouped)
            except PlanExists:  # an earlier attempt stored it
                stored = await self.store.plans.get(req.plan_id) or stored
        return PlanInput(options=ExecutionOptions(dry_run=True), policy=req.input.policy,
                         view=stored)

    async def _still_new(self, req: PlanRequest) -> list[Recommendation]:
        """The candidates still NEW, one per resource (the largest savings), capped."""
        assert req.input.plan is not None
        chosen: dict[tuple[str, str, str], Recommendation] = {}
        for rec_id in req.candidates:
            state = await self.store.recommendation_state(rec_id)
            if state is None or state.status != NEW or state.stale_at is not None:
                continue
            rec = state.recommendation
            chosen.setdefault((rec.account_id, rec.region, rec.resource_id), rec)
            if len(chosen) >= req.input.plan.max_items:
                break
        return list(chosen.values())

    def all(self) -> list[Callable[..., Any]]:
        return [self.import_recommendations, self.store_import_plan]


def plan_name(req: ImportInput) -> str:
    origin = f"schedule {req.schedule}" if req.schedule else f"import from {req.source.value}"
    return f"{origin} for {req.customer_id}: NEW recommendations"[:200]
