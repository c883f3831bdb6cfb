"""After COMPLETED: the rollback window, a rollback on request, and the backups' clean-up.

The resource is free during the window (other executions may change it); a
requested rollback takes the lease again, and when the resource is busy an
accepted request waits for it instead of being dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.execution import ExecutionActivities
    from domain.execution import ActionStepInput, ExecutionRequest, RollbackInput, StepResult
    from domain.savings import SavingsCheckInput
    from domain.status import ExecutionStatus
    from workflows import versions
    from workflows.change import Change
    from workflows.lease import LeaseHandle
    from workflows.ledger import Ledger
    from workflows.options import LEASE_RETRY_FIRST, LEASE_RETRY_MAX, MUTATE_DEADLINE, MUTATE_RETRY
    from workflows.savings import SavingsCheckWorkflow, savings_check_id

S = ExecutionStatus
#: Who asks for a rollback when the watch after the change sees a regression.
WATCH_ACTOR = "reclaim-watch"


class RollbackWindow:
    def __init__(self, ledger: Ledger, request: ExecutionRequest, lease: LeaseHandle, change: Change) -> None:
        self._ledger = ledger
        self._options = request.options
        self._lease = lease
        self._change = change
        self.requested: RollbackInput | None = None
        self.waiting = False
        """An accepted rollback waits for the resource another execution is changing."""
        self.regression: str | None = None
        """What the watch saw, when it is what asked for the rollback."""

    def refusal(self, request: RollbackInput) -> str | None:
        view = self._ledger.view
        if view.status is not S.COMPLETED or view.rollback_available_until is None:
            return (f"execution is {view.status.value}; only a COMPLETED execution within its rollback "
                    "window can be rolled back")
        if self.requested is not None:
            return "a rollback was already requested"
        return None

    def ask(self, request: RollbackInput) -> None:
        """A rollback signal: refused ones are kept in the log with their reason."""
        refusal = self.refusal(request)
        if refusal:
            self._ledger.note(f"rollback by {request.actor} refused: {refusal}")
            return
        self.requested = request

    async def ask_and_answer(self, request: RollbackInput) -> str:
        """A rollback update (its validator asked `refusal`): the caller learns whether it runs
        now or waits for the resource, never accepted and then dropped."""
        self.requested = request
        execution_id = self._ledger.view.execution_id
        if not versions.decided_at_start():
            return f"rollback of {execution_id} requested"
        await workflow.wait_condition(lambda: self.waiting or self._ledger.status is not S.COMPLETED)
        if self.waiting:
            return (f"rollback of {execution_id} accepted: another execution is changing the "
                    "resource; the rollback runs as soon as that ends")
        return f"rollback of {execution_id} started"

    async def run(self, step: ActionStepInput) -> None:
        ledger, view = self._ledger, self._ledger.view
        await self._lease.release()
        step.backup = view.backups[-1] if view.backups else None
        watching = asyncio.ensure_future(self._watch(step)) if self._change.watch_period else None
        try:
            while True:
                await workflow.wait_condition(lambda: self.requested is not None, timeout=self._remaining())
                if await self._lease.try_acquire():
                    break
                if versions.decided_at_start():  # an accepted request is carried out, never dropped
                    await self._await_free_resource()
                    break
                self.requested = None
                ledger.note("rollback refused: another execution is changing the resource; ask again later")
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            view.rollback_available_until = None
            ledger.note("rollback window closed early by cancellation; the change stays, backups are kept")
            raise
        finally:
            if watching is not None and not watching.done():
                watching.cancel()  # the window ended or a rollback runs: nothing left to watch for
        view.rollback_available_until = None
        if self.requested is None:
            if versions.tells_ahead():
                await self._check_savings_later(step)
            await self._close(step)
            return
        request = self.requested
        cause = (self.regression or f"rollback requested by {request.actor}"
                 + (f": {request.reason}" if request.reason else ""))
        await asyncio.shield(asyncio.ensure_future(
            self._change.compensate([("revert", lambda: self._change.revert(step))], cause, False)))

    async def _watch(self, step: ActionStepInput) -> None:
        """The bake after the change: a regression asks for the rollback, with its evidence."""
        evidence = await self._change.watch(step)
        if evidence is not None and self.requested is None:
            self.regression = evidence
            self.requested = RollbackInput(actor=WATCH_ACTOR, reason=evidence)

    async def _check_savings_later(self, step: ActionStepInput) -> None:
        """The change stands: `SavingsCheck` (abandoned, it outlives this execution) measures what
        it saves `measure_savings_after` the change (`workflows/savings.py`)."""
        after, view, rec = self._options.measure_savings_after, self._ledger.view, step.recommendation
        if not after:
            return
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                SavingsCheckWorkflow.run,
                SavingsCheckInput(
                    execution_id=view.execution_id, customer_id=rec.customer_id, account_id=rec.account_id,
                    region=rec.region, kind=rec.kind, resource_id=rec.resource_id,
                    estimated_monthly_savings=view.estimated_monthly_savings,
                    verified_monthly_savings=view.actual_monthly_savings, observed_before=self._ledger.observed,
                    changed_at=self._change.completed_at, after=after),
                id=savings_check_id(view.execution_id), parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"savings check of {rec.resource_id}",
            )
        self._ledger.log(f"savings to be measured {after} after the change ({savings_check_id(view.execution_id)})")

    async def _close(self, step: ActionStepInput) -> None:
        if self._options.retain_backups or not self._ledger.view.backups:
            self._ledger.note(f"rollback window of {self._options.rollback_window} ended; backups kept")
            return
        cleaned: StepResult = await workflow.execute_activity_method(
            ExecutionActivities.cleanup, step,
            start_to_close_timeout=self._options.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
            retry_policy=MUTATE_RETRY,
        )
        self._ledger.note(f"rollback window ended; backups cleaned up: {cleaned.message}")

    async def _await_free_resource(self) -> None:
        """Hold an accepted rollback until the execution changing the resource lets go of it."""
        self.waiting = True
        self._ledger.note("rollback waits: another execution is changing the resource; it runs as soon as that ends")
        delay = LEASE_RETRY_FIRST
        while not await self._lease.try_acquire():
            await workflow.sleep(delay)
            delay = min(delay * 2, LEASE_RETRY_MAX)
        self.waiting = False

    def _remaining(self) -> timedelta:
        until = self._ledger.view.rollback_available_until
        assert until is not None
        return max(until - workflow.now(), timedelta(0))
