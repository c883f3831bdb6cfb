"""A plan's items: each a child ExecutionWorkflow, started, followed until it settles, counted.

An item settles when its execution says so (`item_settled`, sent at COMPLETED,
not at the end of the rollback window) or when the child closes, whichever
comes first; an item waiting for a person is shown apart (`item_waiting`).
A manual item starts no execution: it waits for a person's answer (`plan_manual.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from domain.execution import (
        ExecutionOptions,
        ExecutionRequest,
        ExecutionView,
        dry_run_id_for,
        execution_id_for,
    )
    from domain.manual import AWAITING_CONFIRMATION, ManualStep
    from domain.plan import (
        AWAITING_PERSON,
        ItemResult,
        ItemSettled,
        ItemState,
        ItemWaiting,
        Outcome,
        PlanInput,
        PlanItem,
        WaveProgress,
        outcome,
        read_ahead,
    )
    from domain.presentation import execution_summary
    from domain.status import ExecutionStatus
    from workflows import versions
    from workflows.execution import ExecutionWorkflow
    from workflows.outcomes import child_outcome, describe_error
    from workflows.plan_ledger import PlanLedger
    from workflows.plan_manual import ManualItems


def approved_only(ledger: PlanLedger) -> bool:
    """A dry-run plan's second phase runs only the items its approver kept."""
    return ledger.view.dry_run and ledger.view.phase == "execute"


class PlanItems:
    def __init__(self, ledger: PlanLedger, plan: PlanInput, aborted: Callable[[], bool]) -> None:
        self._ledger = ledger
        self._plan = plan
        self._aborted = aborted
        self.unsettled: set[int] = set()
        """Positions of started items that have not settled."""
        self._settled: dict[str, ItemSettled] = {}
        self._awaiting: set[str] = set()
        self._handles: dict[int, workflow.ChildWorkflowHandle[Any, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: dict[str, WaveProgress] = {}
        """Started, unsettled items by execution id: where their counts stand."""
        self._shown: dict[str, str] = {}
        """The count key an item is shown under while it waits for a person."""
        self.manual = ManualItems(ledger, aborted, plan.policy.approval_public_keys)

    def start(self, wave: WaveProgress, item: PlanItem, was: str | None = None,
              following: list[PlanItem] | None = None) -> None:
        """Start the item in its own task: items started together are started in the same workflow task.
        `was`: the count it leaves (HELD for an item held for its account); `following`: the items to
        start after it, whose resources its validation reads ahead (`domain.plan.read_ahead`)."""
        self.unsettled.add(item.position)
        self._ledger.count(wave, was, ItemState.RUNNING.value)
        task = asyncio.ensure_future(self._run(wave, item, read_ahead(item, following or [])))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_running(self) -> None:
        """Abort: executions that have not settled are cancelled (they compensate what they changed)."""
        for handle in list(self._handles.values()):
            handle.cancel()
        if self._tasks:
            await workflow.wait(list(self._tasks))

    def waiting(self, waiting: ItemWaiting) -> None:
        """Show a started item as waiting for a person (or running again once decided)."""
        wave = self._live.get(waiting.execution_id)
        shown = self._shown.get(waiting.execution_id, ItemState.RUNNING.value)
        new = AWAITING_PERSON if waiting.waiting else ItemState.RUNNING.value
        if wave is None or shown == new:
            return
        self._shown[waiting.execution_id] = new
        self._ledger.count(wave, shown, new)
        self._ledger.view.updated_at = workflow.now()

    def settled(self, settled: ItemSettled) -> None:
        if settled.execution_id in self._awaiting:
            self._settled[settled.execution_id] = settled

    async def _run(self, wave: WaveProgress, item: PlanItem, ahead: list[str]) -> None:
        """Start the item's execution (a child workflow) and follow it until it settles."""
        if item.manual is not None:
            await self._run_manual(wave, item, item.manual)
            return
        view, rec = self._ledger.view, item.recommendation
        assert rec is not None, "a plan item is a recommendation or a manual item"
        dry_run = view.phase == "dry_run"
        execution_id = (dry_run_id_for(rec.id) if dry_run and workflow.patched(versions.PLAN_DRY_RUN_IDS)
                        else execution_id_for(rec.id, dry_run))
        options = ExecutionOptions.model_validate({**self._plan.options.model_dump(), "dry_run": dry_run})
        request = ExecutionRequest(
            recommendation=rec, options=options, requested_by=view.requested_by,
            policy=self._plan.policy_for(rec.account_id),
            plan_id=view.plan_id, plan_approval=view.approval if approved_only(self._ledger) else None,
            expected=item.expected, read_ahead=ahead,
        )
        started = workflow.now()
        try:
            handle = await workflow.start_child_workflow(
                ExecutionWorkflow.run, request, id=execution_id,
                static_summary=execution_summary(rec, dry_run),
                id_reuse_policy=(WorkflowIDReusePolicy.ALLOW_DUPLICATE if dry_run
                                 else WorkflowIDReusePolicy.REJECT_DUPLICATE),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            self.unsettled.discard(item.position)
            self._settle(wave, ItemResult(
                plan_id=view.plan_id, position=item.position, status=ItemState.DUPLICATE.value,
                execution_id=execution_id, started_at=started, finished_at=workflow.now(),
                reason=f"{execution_id} already exists: this recommendation has an execution of its own",
            ))
            return
        self._handles[item.position] = handle
        self._awaiting.add(execution_id)
        self._live[execution_id] = wave
        if self._aborted():  # aborted while this one was starting
            handle.cancel()
        signalled = asyncio.ensure_future(workflow.wait_condition(lambda: execution_id in self._settled))
        await workflow.wait([handle, signalled], return_when=asyncio.FIRST_COMPLETED)
        settled = self._settled.pop(execution_id, None)
        if settled is None:
            signalled.cancel()
            try:
                closed: ExecutionView = handle.result()
                # The child may close before its item_settled signal is seen: its view says all the
                # signal would have, the refusal kind included (a refusal must not count as a failure).
                settled = ItemSettled(execution_id=execution_id, status=closed.status, reason=closed.reason,
                                      refusal=closed.refusal, actual_monthly_savings=closed.actual_monthly_savings,
                                      observed=closed.observed)
            except (ChildWorkflowError, asyncio.CancelledError) as err:
                settled = ItemSettled(execution_id=execution_id, status=child_outcome(err),
                                      reason=describe_error(err))
        self._awaiting.discard(execution_id)
        self.unsettled.discard(item.position)
        self._handles.pop(item.position, None)
        # A refusal by policy is an answer, not a failure: counted apart, never toward the threshold.
        status = ItemState.REFUSED.value if settled.refusal is not None else settled.status.value
        reason = f"refused ({settled.refusal.value}): {settled.reason}" if settled.refusal else settled.reason
        self._settle(wave, ItemResult(
            plan_id=view.plan_id, position=item.position, status=status,
            execution_id=execution_id, reason=reason, actual_monthly_savings=settled.actual_monthly_savings,
            observed=settled.observed, started_at=started, finished_at=workflow.now(),
        ))

    async def _run_manual(self, wave: WaveProgress, item: PlanItem, step: ManualStep) -> None:
        """Wait for a person's answer to a manual item (a dry run plans it without asking)."""
        view, started, key = self._ledger.view, workflow.now(), f"manual:{step.id}"
        if not workflow.patched(versions.PLAN_MANUAL_STEPS):
            # Unreachable on replay: code before the patch could not load a manual item at all.
            status, reason = ExecutionStatus.FAILED.value, "this plan's code predates manual items"
        elif view.phase == "dry_run":
            status, reason = self.manual.planned(step)
        else:
            self._shown[key] = AWAITING_CONFIRMATION
            self._ledger.count(wave, ItemState.RUNNING.value, AWAITING_CONFIRMATION)
            status, reason = await self.manual.wait(step)
        self.unsettled.discard(item.position)
        self._settle(wave, ItemResult(plan_id=view.plan_id, position=item.position, status=status, reason=reason,
                                      started_at=started, finished_at=workflow.now()), key=key)

    def _settle(self, wave: WaveProgress, result: ItemResult, key: str | None = None) -> None:
        ledger = self._ledger
        key = key or result.execution_id or ""
        self._live.pop(key, None)
        shown = self._shown.pop(key, ItemState.RUNNING.value)
        ledger.count(wave, shown, result.status)
        ledger.results.append(result)
        kind = outcome(result.status)
        if kind is Outcome.FAILED:
            ledger.view.failures += 1
        elif kind is Outcome.SUCCEEDED:
            ledger.cursor.succeeded_in_wave += 1
            ledger.view.actual_monthly_savings += result.actual_monthly_savings or 0.0
        ledger.view.updated_at = workflow.now()
