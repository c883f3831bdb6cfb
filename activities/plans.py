"""The plan workflow's reads and writes of its items, in pages and batches.

A plan's recommendations live in the store, not in its history: the workflow
loads a page when it needs one and writes outcomes in batches. Every write is
idempotent (keyed by plan and position), so retries are harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field
from temporalio import activity

from activities.store_errors import store_call
from domain.base import StrictModel
from domain.plan import ItemPage, ItemResult, ItemState, PlanItem, PlanView
from domain.plan_report import build_report
from store.repository import Store


class ItemBatch(StrictModel):
    plan_id: str
    dry_run: bool
    results: list[ItemResult] = Field(default_factory=list)
    view: PlanView | None = None


class WaveMark(StrictModel):
    plan_id: str
    wave: int
    status: ItemState
    reason: str
    approved_only: bool = False


class ApprovedSet(StrictModel):
    plan_id: str
    recommendation_ids: list[str] | None = None


class PlanActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="load_plan_items")
    @store_call
    async def load_plan_items(self, page: ItemPage) -> list[PlanItem]:
        return await self.store.plans.page(page.plan_id, page.wave, page.offset, page.limit, page.approved_only,
                                           page.positions)

    @activity.defn(name="record_plan_items")
    @store_call
    async def record_plan_items(self, batch: ItemBatch) -> None:
        if batch.results:
            await self.store.plans.record(batch.results, batch.dry_run)
        if batch.view is not None:
            await self.store.plans.upsert(batch.view)

    @activity.defn(name="mark_plan_wave")
    @store_call
    async def mark_plan_wave(self, mark: WaveMark) -> int:
        return await self.store.plans.mark_wave(mark.plan_id, mark.wave, mark.status, mark.reason,
                                                mark.approved_only)

    @activity.defn(name="approve_plan_items")
    @store_call
    async def approve_plan_items(self, chosen: ApprovedSet) -> dict[int, int]:
        """Exactly the approved set: the dry run's planned items (in the subset, if one was named)."""
        return await self.store.plans.approve(chosen.plan_id, chosen.recommendation_ids)

    @activity.defn(name="finish_plan")
    @store_call
    async def finish_plan(self, view: PlanView) -> None:
        """The final view and the report built from every stored item, kept for later."""
        await self.store.plans.upsert(view)
        report = build_report(view, await self.store.plans.items(view.plan_id))
        await self.store.plans.save_report(view.plan_id, report.model_dump(mode="json"))

    def all(self) -> list[Callable[..., Any]]:
        return [self.load_plan_items, self.record_plan_items, self.mark_plan_wave, self.approve_plan_items,
                self.finish_plan]
