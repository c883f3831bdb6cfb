"""/api/v1/metrics/summary (per tenant) and /metrics (Prometheus)."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from domain.base import StrictModel
from domain.execution import ExecutionView
from domain.savings import SavingsAccuracy
from domain.status import TERMINAL, ExecutionStatus
from starter.api.deps import ServicesDep, ViewerDep
from starter.api.errors import ApiError
from starter.api.metrics import CONTENT_TYPE, ApiMetrics
from store.repository import Store
from store.savings import KindSavings, SavingsSummary

log = logging.getLogger("reclaim.api")

router = APIRouter(tags=["metrics"])

#: Statuses after which an execution counts as finished (COMPLETED included: the change is done).
FINISHED: frozenset[ExecutionStatus] = TERMINAL | {ExecutionStatus.COMPLETED}
ROLLED_BACK: frozenset[ExecutionStatus] = frozenset({ExecutionStatus.ROLLED_BACK, ExecutionStatus.ROLLBACK_FAILED})
_PAGE = 500


class Durations(StrictModel):
    """Seconds from `started_at` to `finished_at` of the finished executions."""

    count: int = 0
    mean_seconds: float | None = None
    p95_seconds: float | None = Field(default=None, description="Nearest-rank 95th percentile.")


class Savings(StrictModel):
    """The savings ledger's totals (ACTIVE entries; rolled-back ones under `reversed_*`)."""

    estimated_monthly: float = 0.0
    actual_monthly: float = 0.0
    executions: int = 0
    reversed: int = 0
    reversed_actual_monthly: float = 0.0
    by_kind: dict[str, KindSavings] = Field(default_factory=dict)


class MetricsSummary(StrictModel):
    customer_id: str | None = Field(description="The customer asked for; null: every customer the token sees.")
    total: int
    by_status: dict[str, int] = Field(description="Every status, zeros included.")
    finished: int = Field(description="Executions in COMPLETED or a terminal status, dry runs left out.")
    success_rate: float | None = Field(description="COMPLETED / finished; null when nothing finished.")
    rollback_rate: float | None = Field(description="(ROLLED_BACK + ROLLBACK_FAILED) / finished.")
    durations: Durations
    savings: Savings
    pending_approvals: int = Field(description="Executions in AWAITING_APPROVAL.")
    savings_accuracy: SavingsAccuracy = Field(
        default_factory=SavingsAccuracy,
        description="Estimated vs verified vs measured monthly savings per kind and account, with accuracy "
                    "(measured / estimated over the measured changes) and the method (`reclaim savings`).")


@router.get("/api/v1/metrics/summary", response_model=MetricsSummary)
async def summary(
    principal: ViewerDep,
    svc: ServicesDep,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[datetime | None, Query(description="savings_accuracy: changes completed since.")] = None,
) -> MetricsSummary:
    """Execution and savings figures for one customer, or for every customer the token sees.

    A customer the token may not see gives an empty summary (zeros), exactly like
    `GET /api/v1/executions?customer_id=` gives an empty list: no hint that it exists.

    Dry runs count in `total` and `by_status` but not in `finished`, the rates or the durations.
    Computed by paging through the read model (fine for now; a SQL aggregate in the
    store is the follow-up once a tenant has many thousands of executions).
    """
    if customer_id is not None and not principal.sees(customer_id):
        return _summarize(customer_id, [], SavingsSummary(), SavingsAccuracy(since=since))
    allowed = principal.customer_filter()
    customers = {customer_id} if customer_id is not None else allowed
    views = await _all_executions(svc.store, customers)
    if customers is None:
        savings = await svc.store.savings_summary()
    else:
        savings = _merge([await svc.store.savings_summary(customer_id=c) for c in sorted(customers)])
    # Its customer is the summary's own `customer_id` (one place, so both answers compare whole).
    checked = await svc.store.measurements.accuracy(customer_ids=customers, since=since)
    return _summarize(customer_id, views, savings, checked)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Prometheus text format 0.0.4"},
               503: {"description": "the read model cannot be read"}},
)
async def prometheus(request: Request, svc: ServicesDep) -> Response:
    """Prometheus scrape target. Counts only, no customer labels; no token needed (like /healthz)."""
    metrics: ApiMetrics = request.app.state.metrics
    try:
        await metrics.refresh(svc.store)
    except Exception:
        log.warning("cannot count executions for /metrics", exc_info=True)
        raise ApiError(503, "unavailable", "the read model cannot be read") from None
    return Response(metrics.render(), media_type=CONTENT_TYPE)


async def _all_executions(store: Store, customers: Collection[str] | None) -> list[ExecutionView]:
    views: list[ExecutionView] = []
    cursor = None
    while True:
        page = await store.list_executions(customer_ids=customers, limit=_PAGE, cursor=cursor)
        views.extend(page.executions)
        if page.next_cursor is None:
            return views
        cursor = page.next_cursor


def _merge(parts: list[SavingsSummary]) -> SavingsSummary:
    total = SavingsSummary()
    for part in parts:
        total.executions += part.executions
        total.estimated_monthly += part.estimated_monthly
        total.actual_monthly += part.actual_monthly
        total.reversed += part.reversed
        total.reversed_actual_monthly += part.reversed_actual_monthly
        for kind, figures in part.by_kind.items():
            into = total.by_kind.setdefault(kind, KindSavings())
            into.estimated_monthly += figures.estimated_monthly
            into.actual_monthly += figures.actual_monthly
            into.executions += figures.executions
    return total


def _summarize(customer_id: str | None, views: list[ExecutionView], savings: SavingsSummary,
               checked: SavingsAccuracy) -> MetricsSummary:
    by_status = {s.value: 0 for s in ExecutionStatus}
    for view in views:
        by_status[view.status.value] += 1
    finished = [v for v in views if v.status in FINISHED and not v.dry_run]
    completed = sum(1 for v in finished if v.status is ExecutionStatus.COMPLETED)
    rolled_back = sum(1 for v in finished if v.status in ROLLED_BACK)
    seconds = sorted(
        (v.finished_at - v.started_at).total_seconds() for v in finished if v.finished_at is not None
    )
    durations = Durations(count=len(seconds))
    if seconds:
        durations.mean_seconds = sum(seconds) / len(seconds)
        durations.p95_seconds = seconds[max(0, math.ceil(0.95 * len(seconds)) - 1)]
    return MetricsSummary(
        customer_id=customer_id,
        total=len(views),
        by_status=by_status,
        finished=len(finished),
        success_rate=completed / len(finished) if finished else None,
        rollback_rate=rolled_back / len(finished) if finished else None,
        durations=durations,
        savings=Savings(**savings.model_dump(exclude={"customer_id"})),
        pending_approvals=by_status[ExecutionStatus.AWAITING_APPROVAL.value],
        savings_accuracy=checked,
    )
