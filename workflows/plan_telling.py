"""Who hears of a plan's moments: its dry run awaiting approval, a pause at its error threshold,
its end (with the report's summary). Since PLAN_TELLS_AND_HOLDS.

Each notification is routed and delivered by ordinary activities on the records queue
(`workflows/notify.py` `tell_durably`), started and not awaited: a dead channel fails only
its own delivery, and the plan goes on. The plan waits for what is still being delivered
only where the run ends (its close, a continue-as-new), bounded by the delivery deadline.
The n of each dedup key (`<plan id>:<event>:<n>`) travels in the plan's input across
continue-as-new, so a second pause is a new message, never a dropped duplicate.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.notifications import NotificationEvent
    from domain.plan import PlanInput
    from domain.plan_events import plan_notification
    from workflows.notify import tell_durably
    from workflows.plan_ledger import PlanLedger


class PlanTelling:
    def __init__(self, ledger: PlanLedger, plan: PlanInput) -> None:
        self._ledger = ledger
        self.told: dict[str, int] = dict(plan.told)
        """Notifications sent per event (the next one's n)."""
        self.on = False
        """Decided in the plan's first activation (PLAN_TELLS_AND_HOLDS)."""
        self._pending: set[asyncio.Task[None]] = set()

    def tell(self, event: NotificationEvent) -> None:
        """Tell the notify file's channels of `event`, as the plan's view shows it now."""
        if not self.on:
            return
        sequence = self.told.get(event.value, 0)
        self.told[event.value] = sequence + 1
        notification = plan_notification(self._ledger.view, event, sequence, workflow.now())
        task = asyncio.ensure_future(tell_durably(notification))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the deliveries still under way (each bounded by its deadline)."""
        if self._pending:
            await workflow.wait(list(self._pending))
