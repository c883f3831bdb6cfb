"""A plan's record of itself: its view, where it stands (cursor), its counts and events,
and the batched writes of item outcomes to the store.

The parts of a plan (controls, items, waves) share it, so a count or a status
changes one way only.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.plans import ItemBatch, PlanActivities
    from activities.records import plan_records_task_queue, records_task_queue
    from domain.plan import (
        WAITING_FOR_PEOPLE,
        ItemResult,
        ItemState,
        PlanCursor,
        PlanEvent,
        PlanStatus,
        PlanView,
        WaveProgress,
    )
    from workflows import search_attributes as sa
    from workflows.options import RECORD_RETRY, STORE_TIMEOUT

MAX_EVENTS = 200


class PlanLedger:
    def __init__(self, view: PlanView, cursor: PlanCursor) -> None:
        self.view = view
        self.cursor = cursor
        self.results: list[ItemResult] = []
        """Settled items not yet written to the store."""
        self.last_flush = workflow.now()
        #: The plan's store activities run beside the execution writes, never in AWS work's slots.
        self.store_queue = records_task_queue(workflow.info().task_queue)
        self.behind = False
        """Since PLAN_TELLS_AND_HOLDS: outcomes are written behind (`flush_soon`), and the plan's
        store activities have a task queue of their own (`write_behind`)."""
        self._writing: asyncio.Task[None] | None = None

    def write_behind(self) -> None:
        """Decided in the plan's first activation (PLAN_TELLS_AND_HOLDS). A wedged read model held
        a 300-item plan at its first 100 items: every new start waited for the write of the
        outcomes so far, and that write waited for a slot the executions' retried writes kept
        full. Now items start while the write is under way, and the plan's store activities
        have their own queue and slots (`<queue>-plan-records`)."""
        self.behind = True
        self.store_queue = plan_records_task_queue(workflow.info().task_queue)

    @property
    def writing(self) -> bool:
        return self._writing is not None and not self._writing.done()

    def wants_flush(self) -> bool:
        """Outcomes gathered and no write of them under way (one under way: they go with the next)."""
        return bool(self.results) and not self.writing

    def flush_soon(self) -> None:
        """Write behind: start the write of the outcomes so far, unless one is under way (they go
        with the next); one write at a time, so the store sees them in order."""
        if not self.behind:
            raise RuntimeError("flush_soon before write_behind")
        if self.writing:
            return
        self._writing = asyncio.ensure_future(self.flush())

    async def flush_landed(self) -> None:
        """Every outcome so far in the store (the report is built from it): wait for the write under
        way, then write what came meanwhile."""
        if self._writing is not None:
            await self._writing
            self._writing = None
        await self.flush()

    def set_status(self, status: PlanStatus, message: str) -> None:
        self.view.status = status
        self.view.reason = message
        self.event(message)
        workflow.upsert_search_attributes([sa.EXECUTION_STATUS.value_set(status.value)])

    def event(self, message: str) -> None:
        self.view.events.append(PlanEvent(at=workflow.now(), message=message))
        del self.view.events[:-MAX_EVENTS]
        self.view.updated_at = workflow.now()

    def count(self, wave: WaveProgress, old: str | None, new: str) -> None:
        """Move one item from `old` to `new` in its wave's counts and the plan's."""
        for counts in (wave.counts, self.view.counts):
            if old is not None:
                counts[old] = counts.get(old, 0) - 1
                if counts[old] <= 0:
                    del counts[old]
            counts[new] = counts.get(new, 0) + 1
        self.view.awaiting_person = sum(self.view.counts.get(key, 0) for key in WAITING_FOR_PEOPLE)
        self.view.running = self.view.counts.get(ItemState.RUNNING.value, 0) + self.view.awaiting_person

    def uncount(self, wave: WaveProgress, status: str, n: int) -> None:
        """Take `n` items out of `status` (they go back to the wave's not-started ones)."""
        for counts in (wave.counts, self.view.counts):
            counts[status] = counts.get(status, 0) - n
            if counts[status] <= 0:
                del counts[status]

    def count_many(self, wave: WaveProgress, status: str, n: int) -> None:
        for counts in (wave.counts, self.view.counts):
            counts[status] = counts.get(status, 0) + n

    async def flush(self) -> None:
        """Outcomes so far and the plan's view, in one activity."""
        results, self.results = self.results, []
        self.view.sequence += 1
        self.last_flush = workflow.now()
        await workflow.execute_activity_method(
            PlanActivities.record_plan_items,
            ItemBatch(plan_id=self.view.plan_id, dry_run=self.view.phase == "dry_run", results=results,
                      view=self.view.model_copy(deep=True)),
            start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY, task_queue=self.store_queue,
        )
