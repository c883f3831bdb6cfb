"""A plan's record of itself: its view, where it stands (cursor), its counts and events,
and the batched writes of item outcomes to the store.

The parts of a plan (controls, items, waves) share it, so a count or a status
changes one way only.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.plans import ItemBatch, PlanActivities
    from activities.records import records_task_queue
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
