"""PlanWorkflow: many recommendations as one durable unit, in waves, under rate control.

Each item is a child ExecutionWorkflow (same lifecycle, same audit). The plan
only decides what starts when: waves in dependency order, at most N items of a
wave at once (optionally ramping 1, 2, 4, ...), no new item once the error
threshold is reached, waves behind a failed one skipped. Items live in the
store and are loaded a page at a time; outcomes are written in batches; the
plan continues as new between items when its history grows, so a 10,000-item
plan keeps a bounded history.

A dry-run plan dry-runs every item, then waits for its report to be approved;
the approval runs exactly the approved set, each item carrying what its dry run
observed so that drift is refused, never changed silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from activities.plans import ApprovedSet, ItemBatch, PlanActivities, WaveMark
    from activities.records import records_task_queue
    from domain.execution import (
        ExecutionOptions,
        ExecutionRequest,
        ExecutionView,
        PlanApproval,
        execution_id_for,
    )
    from domain.plan import (
        AWAITING_PERSON,
        ItemPage,
        ItemResult,
        ItemSettled,
        ItemState,
        ItemWaiting,
        Outcome,
        PlanControl,
        PlanCursor,
        PlanDecision,
        PlanEvent,
        PlanInput,
        PlanItem,
        PlanStatus,
        PlanView,
        WavePlan,
        WaveProgress,
        WaveState,
        outcome,
        ramp_limit,
    )
    from domain.policy import Role, approval_refusal
    from domain.presentation import execution_summary
    from domain.status import ExecutionStatus
    from workflows import search_attributes as sa
    from workflows.execution import ExecutionWorkflow
    from workflows.outcomes import child_outcome, describe_error

PAGE = 100
FLUSH_AT = 50
FLUSH_EVERY = timedelta(seconds=10)
MAX_EVENTS = 200
STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30))
CONTROL_ROLES = (Role.OPERATOR, Role.APPROVER, Role.ADMIN)


class _Aborted(Exception):
    """Unwinds a wave once the plan is being aborted."""


@workflow.defn(name="PlanWorkflow")
class PlanWorkflow:
    @workflow.init
    def __init__(self, plan: PlanInput) -> None:
        self._input = plan
        self._view = plan.view
        #: The plan's store activities run beside the execution writes, never in AWS work's slots.
        self._store_queue = records_task_queue(workflow.info().task_queue)
        self._cursor = plan.cursor or PlanCursor(wave=0, offset=0)
        self._settled: dict[str, ItemSettled] = {}
        self._awaiting: set[str] = set()
        self._unsettled: set[int] = set()
        self._handles: dict[int, workflow.ChildWorkflowHandle[Any, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[ItemResult] = []
        self._last_flush = workflow.now()
        self._paused = self._view.status is PlanStatus.PAUSED
        self._paused_at = workflow.now()
        self._abort: PlanControl | None = None
        self._live: dict[str, WaveProgress] = {}
        """Started, unsettled items by execution id: where their counts stand."""
        self._shown: dict[str, str] = {}
        """The count key an item is shown under while it waits for a person."""
        self._decision: tuple[bool, PlanDecision] | None = None

    # ---- run ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, plan: PlanInput) -> PlanView:
        customers = self._view.customer_ids
        attributes = [sa.EXECUTION_STATUS.value_set(self._view.status.value)]
        if len(customers) == 1:
            attributes.append(sa.CUSTOMER_ID.value_set(customers[0]))
        workflow.upsert_search_attributes(attributes)
        try:
            if self._view.phase == "dry_run":
                if not self._cursor.phase_done:
                    await self._run_phase()
                    self._cursor = PlanCursor(wave=0, offset=0, phase_done=True)
                if self._abort is None and await self._approved():
                    await self._run_phase()
            else:
                await self._run_phase()
        except Exception as err:  # never continue-as-new or an eviction (BaseExceptions)
            if is_cancelled_exception(err):
                raise
            # One way out: the plan says how it ended, in the store too, before it fails.
            reason = f"the plan itself failed: {describe_error(err)}"
            self._view.finished_at = workflow.now()
            self._set_status(PlanStatus.FAILED, reason)
            self._view.sequence += 1
            with contextlib.suppress(ActivityError):
                await workflow.execute_activity_method(
                    PlanActivities.finish_plan, self._view.model_copy(deep=True),
                    start_to_close_timeout=timedelta(minutes=2), schedule_to_close_timeout=timedelta(minutes=10),
                    retry_policy=STORE_RETRY, task_queue=self._store_queue,
                )
            raise ApplicationError(reason, type="PlanFailed", non_retryable=True) from None
        return await self._finish()

    async def _approved(self) -> bool:
        """After the dry run: wait for the report's approval; on approval, switch to the approved set."""
        planned = self._view.counts.get(ExecutionStatus.PLANNED.value, 0)
        if planned == 0:
            self._view.reason = "no item passed the dry run: nothing to approve"
            return False
        self._set_status(PlanStatus.AWAITING_APPROVAL, f"dry run done: {planned} of {self._view.total} items "
                                                        "can run; waiting for the report's approval")
        await self._flush()
        timeout = self._view.rate.approval_timeout
        try:
            await workflow.wait_condition(lambda: self._decision is not None or self._abort is not None,
                                          timeout=timeout)
        except TimeoutError:
            self._abort = PlanControl(actor="reclaim", role=Role.ADMIN, reason=f"no approval within {timeout}")
            return False
        if self._abort is not None or self._decision is None:
            return False
        approve, decision = self._decision
        if not approve:
            self._abort = PlanControl(actor=decision.actor, role=decision.role,
                                      reason=f"dry run rejected by {decision.actor}" +
                                             (f": {decision.comment}" if decision.comment else ""))
            return False
        per_wave: dict[int, int] = await workflow.execute_activity_method(
            PlanActivities.approve_plan_items, ApprovedSet(plan_id=self._view.plan_id,
                                                           recommendation_ids=decision.items),
            start_to_close_timeout=timedelta(minutes=2), retry_policy=STORE_RETRY,
            task_queue=self._store_queue,
        )
        approved = sum(per_wave.values())
        self._view.approval = PlanApproval(plan_id=self._view.plan_id, actor=decision.actor, role=decision.role,
                                           comment=decision.comment, at=workflow.now())
        self._view.phase = "execute"
        self._view.not_approved = self._view.total - approved
        self._view.total = approved
        self._view.counts = {ItemState.NOT_APPROVED.value: self._view.not_approved} if self._view.not_approved else {}
        self._view.failures = 0
        for wave in self._view.waves:
            wave.size, wave.state, wave.counts = per_wave.get(wave.index, 0), WaveState.PENDING, {}
            wave.started_at = wave.finished_at = None
        self._cursor = PlanCursor(wave=0, offset=0)
        self._event(f"running the {approved} approved items")
        return True

    async def _run_phase(self) -> None:
        waves = self._view.waves
        while self._cursor.wave < len(waves):
            wave = waves[self._cursor.wave]
            try:
                await self._run_wave(wave)
            except _Aborted:
                break
            self._cursor = PlanCursor(wave=self._cursor.wave + 1, offset=0,
                                      failed_waves=self._cursor.failed_waves, phase_done=self._cursor.phase_done)
        if self._abort is not None:
            for wave in waves[self._cursor.wave:]:
                if wave.state in (WaveState.PENDING, WaveState.WAITING, WaveState.RUNNING):
                    await self._close_wave(wave, ItemState.NOT_STARTED, f"plan aborted: {self._abort.reason}")
        await self._flush()

    # ---- one wave ----------------------------------------------------------------------

    async def _run_wave(self, wave: WaveProgress) -> None:
        spec = self._spec(wave)
        blocked = [d for d in spec.depends_on if d in self._cursor.failed_waves]
        if blocked and wave.state is WaveState.PENDING:
            names = ", ".join(self._view.waves[d].name for d in blocked)
            self._cursor.failed_waves.append(wave.index)
            await self._close_wave(wave, ItemState.SKIPPED, f"skipped: wave {names} failed")
            return
        if wave.size == 0:
            wave.state = WaveState.SUCCEEDED
            return
        if wave.state is WaveState.PENDING and spec.wait_seconds > 0:
            wave.state = WaveState.WAITING
            self._event(f"wave {wave.name}: waiting {spec.wait_seconds:g} s before it starts")
            with contextlib.suppress(TimeoutError):  # the wait is over: the wave starts
                await workflow.wait_condition(lambda: self._abort is not None,
                                              timeout=timedelta(seconds=spec.wait_seconds))
            if self._abort is not None:
                raise _Aborted
        if wave.state in (WaveState.PENDING, WaveState.WAITING):
            wave.state, wave.started_at = WaveState.RUNNING, workflow.now()
            self._event(f"wave {wave.name}: started ({wave.size} items)")
        await self._drive(wave, spec)
        failed = any(outcome(s) is Outcome.FAILED and n for s, n in wave.counts.items())
        wave.state, wave.finished_at = (WaveState.FAILED if failed else WaveState.SUCCEEDED), workflow.now()
        if failed:
            self._cursor.failed_waves.append(wave.index)
        self._event(f"wave {wave.name}: {wave.state.value.lower()}")
        await self._flush()

    async def _drive(self, wave: WaveProgress, spec: WavePlan) -> None:
        """Start items while the rate control allows; return when the wave is done."""
        buffer: list[PlanItem] = []
        limit = 1 if spec.mode.value == "ordered" else self._view.rate.concurrency(wave.size)
        while True:
            def may_start() -> bool:
                current = ramp_limit(limit, self._view.rate.ramp_up, self._cursor.succeeded_in_wave)
                return (self._cursor.offset < wave.size and not self._paused and self._abort is None
                        and not self._threshold_reached() and not self._history_full()
                        and len(self._unsettled) < current)

            def wake() -> bool:
                return (may_start() or self._abort is not None or len(self._results) >= FLUSH_AT
                        or (self._threshold_reached() and not self._paused)
                        or (not self._unsettled and (self._cursor.offset >= wave.size or self._history_full())))

            with contextlib.suppress(TimeoutError):  # time to flush, or to check the pause deadline
                await workflow.wait_condition(wake, timeout=self._wake_timeout())
            if self._results and (len(self._results) >= FLUSH_AT or workflow.now() - self._last_flush >= FLUSH_EVERY):
                await self._flush()
            if self._abort is not None:
                await self._cancel_running()
                raise _Aborted
            if self._paused and workflow.now() - self._paused_at >= self._view.rate.pause_timeout:
                self._abort = PlanControl(actor="reclaim", role=Role.ADMIN,
                                          reason=f"paused for {self._view.rate.pause_timeout} without a resume")
                continue
            if self._threshold_reached() and not self._paused:
                threshold = self._view.rate.threshold(self._view.total)
                self._pause(f"error threshold reached: {self._view.failures} failed items (threshold {threshold})")
                continue
            if not self._unsettled and self._cursor.offset >= wave.size:
                return
            if not self._unsettled and self._history_full():
                await self._continue_as_new()
            while may_start():
                if not buffer:
                    buffer = await workflow.execute_activity_method(
                        PlanActivities.load_plan_items,
                        ItemPage(plan_id=self._view.plan_id, wave=wave.index, offset=self._cursor.offset,
                                 limit=PAGE, approved_only=self._approved_only()),
                        start_to_close_timeout=timedelta(minutes=2), retry_policy=STORE_RETRY,
                        task_queue=self._store_queue,
                    )
                    if not buffer:
                        raise ApplicationError(f"wave {wave.name} has fewer stored items than planned",
                                               type="PlanItemsMissing", non_retryable=True)
                    continue  # the rate control may have changed while the page loaded
                item = buffer.pop(0)
                self._cursor.offset += 1
                self._start(wave, item)

    def _wake_timeout(self) -> timedelta | None:
        timeouts = []
        if self._results:
            timeouts.append(max(FLUSH_EVERY - (workflow.now() - self._last_flush), timedelta(seconds=1)))
        if self._paused:
            timeouts.append(max(self._view.rate.pause_timeout - (workflow.now() - self._paused_at),
                                timedelta(seconds=1)))
        return min(timeouts) if timeouts else None

    def _threshold_reached(self) -> bool:
        threshold = self._view.rate.threshold(self._view.total)
        return threshold is not None and self._view.failures >= threshold

    def _history_full(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._input.history_limit

    def _approved_only(self) -> bool:
        return self._view.dry_run and self._view.phase == "execute"

    def _spec(self, wave: WaveProgress) -> WavePlan:
        return WavePlan(index=wave.index, name=wave.name, size=wave.size, depends_on=wave.depends_on,
                        wait_seconds=wave.wait_seconds, mode=wave.mode)

    # ---- one item ----------------------------------------------------------------------

    def _start(self, wave: WaveProgress, item: PlanItem) -> None:
        """Start the item in its own task: items started together are started in the same workflow task."""
        self._unsettled.add(item.position)
        self._count(wave, None, ItemState.RUNNING.value)
        task = asyncio.ensure_future(self._run_item(wave, item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_item(self, wave: WaveProgress, item: PlanItem) -> None:
        """Start the item's execution (a child workflow) and follow it until it settles."""
        rec = item.recommendation
        dry_run = self._view.phase == "dry_run"
        execution_id = execution_id_for(rec.id, dry_run)
        options = ExecutionOptions.model_validate({**self._input.options.model_dump(), "dry_run": dry_run})
        request = ExecutionRequest(
            recommendation=rec, options=options, requested_by=self._view.requested_by, policy=self._input.policy,
            plan_id=self._view.plan_id, plan_approval=self._view.approval if self._approved_only() else None,
            expected=item.expected,
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
            self._unsettled.discard(item.position)
            self._settle(wave, item, ItemResult(
                plan_id=self._view.plan_id, position=item.position, status=ItemState.DUPLICATE.value,
                execution_id=execution_id, started_at=started, finished_at=workflow.now(),
                reason=f"{execution_id} already exists: this recommendation has an execution of its own",
            ))
            return
        self._handles[item.position] = handle
        self._awaiting.add(execution_id)
        self._live[execution_id] = wave
        if self._abort is not None:  # aborted while this one was starting
            handle.cancel()
        signalled = asyncio.ensure_future(workflow.wait_condition(lambda: execution_id in self._settled))
        await workflow.wait([handle, signalled], return_when=asyncio.FIRST_COMPLETED)
        settled = self._settled.pop(execution_id, None)
        if settled is None:
            signalled.cancel()
            try:
                view: ExecutionView = handle.result()
                settled = ItemSettled(execution_id=execution_id, status=view.status, reason=view.reason,
                                      actual_monthly_savings=view.actual_monthly_savings)
            except (ChildWorkflowError, asyncio.CancelledError) as err:
                settled = ItemSettled(execution_id=execution_id, status=child_outcome(err),
                                      reason=describe_error(err))
        self._awaiting.discard(execution_id)
        self._unsettled.discard(item.position)
        self._handles.pop(item.position, None)
        # A refusal by policy is an answer, not a failure: counted apart, never toward the threshold.
        status = ItemState.REFUSED.value if settled.refusal is not None else settled.status.value
        reason = f"refused ({settled.refusal.value}): {settled.reason}" if settled.refusal else settled.reason
        self._settle(wave, item, ItemResult(
            plan_id=self._view.plan_id, position=item.position, status=status,
            execution_id=execution_id, reason=reason, actual_monthly_savings=settled.actual_monthly_savings,
            observed=settled.observed, started_at=started, finished_at=workflow.now(),
        ))

    def _settle(self, wave: WaveProgress, item: PlanItem, result: ItemResult) -> None:
        self._live.pop(result.execution_id or "", None)
        shown = self._shown.pop(result.execution_id or "", ItemState.RUNNING.value)
        self._count(wave, shown, result.status)
        self._results.append(result)
        kind = outcome(result.status)
        if kind is Outcome.FAILED:
            self._view.failures += 1
        elif kind is Outcome.SUCCEEDED:
            self._cursor.succeeded_in_wave += 1
            self._view.actual_monthly_savings += result.actual_monthly_savings or 0.0
        self._view.updated_at = workflow.now()

    def _count(self, wave: WaveProgress, old: str | None, new: str) -> None:
        for counts in (wave.counts, self._view.counts):
            if old is not None:
                counts[old] = counts.get(old, 0) - 1
                if counts[old] <= 0:
                    del counts[old]
            counts[new] = counts.get(new, 0) + 1
        self._view.awaiting_person = self._view.counts.get(AWAITING_PERSON, 0)
        self._view.running = self._view.counts.get(ItemState.RUNNING.value, 0) + self._view.awaiting_person

    async def _cancel_running(self) -> None:
        """Abort: executions that have not settled are cancelled (they compensate what they changed)."""
        for handle in list(self._handles.values()):
            handle.cancel()
        if self._tasks:
            await workflow.wait(list(self._tasks))

    async def _close_wave(self, wave: WaveProgress, status: ItemState, reason: str) -> None:
        """Items of a wave that will never start: counted and stored in one step."""
        remaining = wave.size - sum(n for s, n in wave.counts.items() if s != ItemState.PENDING.value)
        if remaining > 0:
            self._count_many(wave, status.value, remaining)
        wave.state = WaveState.SKIPPED if status is ItemState.SKIPPED else WaveState.NOT_STARTED
        wave.finished_at = workflow.now()
        self._event(f"wave {wave.name}: {reason}")
        await workflow.execute_activity_method(
            PlanActivities.mark_plan_wave,
            WaveMark(plan_id=self._view.plan_id, wave=wave.index, status=status, reason=reason,
                     approved_only=self._approved_only()),
            start_to_close_timeout=timedelta(minutes=2), retry_policy=STORE_RETRY,
            task_queue=self._store_queue,
        )

    def _count_many(self, wave: WaveProgress, status: str, n: int) -> None:
        for counts in (wave.counts, self._view.counts):
            counts[status] = counts.get(status, 0) + n

    # ---- controls ----------------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        self._paused, self._paused_at = True, workflow.now()
        self._set_status(PlanStatus.PAUSED, reason)

    def _control_refusal(self, control: PlanControl, action: str) -> str | None:
        if control.role not in CONTROL_ROLES:
            return f"{control.actor} has role {control.role.value}; {action} needs operator, approver or admin"
        if self._view.status in (PlanStatus.COMPLETED, PlanStatus.COMPLETED_WITH_FAILURES, PlanStatus.ABORTED,
                                 PlanStatus.FAILED) or self._abort is not None:
            return f"plan is {self._view.status.value}" + (" and aborting" if self._abort is not None else "")
        if action == "pause" and (self._paused or self._view.status is not PlanStatus.RUNNING):
            return f"plan is {self._view.status.value}; only a RUNNING plan can be paused"
        if action == "resume" and not self._paused:
            return f"plan is {self._view.status.value}, not paused"
        return None

    def _control(self, action: str, control: PlanControl, via: str) -> str:
        refusal = self._control_refusal(control, action)
        if refusal:
            self._event(f"{action} by {control.actor} via {via} refused: {refusal}")
            return refusal
        suffix = f": {control.reason}" if control.reason else ""
        if action == "pause":
            self._pause(f"paused by {control.actor}{suffix}")
        elif action == "resume":
            self._paused = False
            self._view.failures = 0  # the threshold counts failures since the last resume
            self._set_status(PlanStatus.RUNNING, f"resumed by {control.actor}{suffix}")
        else:
            self._abort = control if control.reason else control.model_copy(
                update={"reason": f"aborted by {control.actor}"})
            self._event(f"abort requested by {control.actor} via {via}{suffix}")
        return f"plan {self._view.plan_id}: {action} accepted"

    @workflow.signal(name="pause")
    def pause_signal(self, control: PlanControl) -> None:
        self._control("pause", control, "signal")

    @workflow.signal(name="resume")
    def resume_signal(self, control: PlanControl) -> None:
        self._control("resume", control, "signal")

    @workflow.signal(name="abort")
    def abort_signal(self, control: PlanControl) -> None:
        self._control("abort", control, "signal")

    @workflow.update(name="pause")
    def pause_update(self, control: PlanControl) -> str:
        return self._control("pause", control, "update")

    @pause_update.validator
    def _validate_pause(self, control: PlanControl) -> None:
        self._raise_refusal(self._control_refusal(control, "pause"))

    @workflow.update(name="resume")
    def resume_update(self, control: PlanControl) -> str:
        return self._control("resume", control, "update")

    @resume_update.validator
    def _validate_resume(self, control: PlanControl) -> None:
        self._raise_refusal(self._control_refusal(control, "resume"))

    @workflow.update(name="abort")
    def abort_update(self, control: PlanControl) -> str:
        return self._control("abort", control, "update")

    @abort_update.validator
    def _validate_abort(self, control: PlanControl) -> None:
        self._raise_refusal(self._control_refusal(control, "abort"))

    def _decision_refusal(self, decision: PlanDecision, approve: bool) -> str | None:
        if self._view.status is not PlanStatus.AWAITING_APPROVAL or self._decision is not None:
            return f"plan is {self._view.status.value}; only a dry-run plan awaiting approval can be decided"
        if approve and decision.items is not None and not decision.items:
            return "an approval naming items must name at least one"
        return approval_refusal(self._input.policy, decision.actor, decision.role, self._view.requested_by,
                                approve=approve)

    def _decide(self, decision: PlanDecision, approve: bool, via: str) -> str:
        verb = "approve" if approve else "reject"
        refusal = self._decision_refusal(decision, approve)
        if refusal:
            self._event(f"{verb} by {decision.actor} via {via} refused: {refusal}")
            return refusal
        self._decision = (approve, decision)
        message = f"{verb}d by {decision.actor} via {via}" + (f": {decision.comment}" if decision.comment else "")
        if approve:  # the answer to the approver already shows the plan moving on
            self._set_status(PlanStatus.RUNNING, message)
        else:
            self._event(message)
        return f"plan {self._view.plan_id}: {verb}d"

    @workflow.signal(name="approve")
    def approve_signal(self, decision: PlanDecision) -> None:
        self._decide(decision, True, "signal")

    @workflow.signal(name="reject")
    def reject_signal(self, decision: PlanDecision) -> None:
        self._decide(decision, False, "signal")

    @workflow.update(name="approve")
    def approve_update(self, decision: PlanDecision) -> str:
        return self._decide(decision, True, "update")

    @approve_update.validator
    def _validate_approve(self, decision: PlanDecision) -> None:
        self._raise_refusal(self._decision_refusal(decision, True))

    @workflow.update(name="reject")
    def reject_update(self, decision: PlanDecision) -> str:
        return self._decide(decision, False, "update")

    @reject_update.validator
    def _validate_reject(self, decision: PlanDecision) -> None:
        self._raise_refusal(self._decision_refusal(decision, False))

    @staticmethod
    def _raise_refusal(refusal: str | None) -> None:
        if refusal:
            raise ApplicationError(refusal, type="Refused", non_retryable=True)

    @workflow.signal(name="item_waiting")
    def item_waiting(self, waiting: ItemWaiting) -> None:
        """Show a started item as waiting for a person (or running again once decided)."""
        wave = self._live.get(waiting.execution_id)
        shown = self._shown.get(waiting.execution_id, ItemState.RUNNING.value)
        new = AWAITING_PERSON if waiting.waiting else ItemState.RUNNING.value
        if wave is None or shown == new:
            return
        self._shown[waiting.execution_id] = new
        self._count(wave, shown, new)
        self._view.updated_at = workflow.now()

    @workflow.signal(name="item_settled")
    def item_settled(self, settled: ItemSettled) -> None:
        if settled.execution_id in self._awaiting:
            self._settled[settled.execution_id] = settled

    @workflow.query(name="progress")
    def progress(self) -> PlanView:
        return self._view

    # ---- bookkeeping -------------------------------------------------------------------

    def _set_status(self, status: PlanStatus, message: str) -> None:
        self._view.status = status
        self._view.reason = message
        self._event(message)
        workflow.upsert_search_attributes([sa.EXECUTION_STATUS.value_set(status.value)])

    def _event(self, message: str) -> None:
        self._view.events.append(PlanEvent(at=workflow.now(), message=message))
        del self._view.events[:-MAX_EVENTS]
        self._view.updated_at = workflow.now()

    async def _flush(self) -> None:
        """Outcomes so far and the plan's view, in one activity."""
        results, self._results = self._results, []
        self._view.sequence += 1
        self._last_flush = workflow.now()
        await workflow.execute_activity_method(
            PlanActivities.record_plan_items,
            ItemBatch(plan_id=self._view.plan_id, dry_run=self._view.phase == "dry_run", results=results,
                      view=self._view.model_copy(deep=True)),
            start_to_close_timeout=timedelta(minutes=2), retry_policy=STORE_RETRY,
            task_queue=self._store_queue,
        )

    async def _continue_as_new(self) -> None:
        await self._flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._event(f"continuing as new after {workflow.info().get_current_history_length()} history events")
        workflow.continue_as_new(self._input.model_copy(update={"view": self._view, "cursor": self._cursor}))

    async def _finish(self) -> PlanView:
        status, reason = self._final_status()
        self._view.finished_at = workflow.now()
        self._set_status(status, reason)
        self._view.sequence += 1
        await workflow.execute_activity_method(
            PlanActivities.finish_plan, self._view.model_copy(deep=True),
            start_to_close_timeout=timedelta(minutes=5), retry_policy=STORE_RETRY,
            task_queue=self._store_queue,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    def _final_status(self) -> tuple[PlanStatus, str]:
        if self._abort is not None:
            return PlanStatus.ABORTED, self._abort.reason
        tally: dict[Outcome, int] = {}
        for status, n in self._view.counts.items():
            if status == ItemState.NOT_APPROVED.value:
                continue  # left out on purpose by the approver
            tally[outcome(status)] = tally.get(outcome(status), 0) + n
        succeeded, failed = tally.get(Outcome.SUCCEEDED, 0), tally.get(Outcome.FAILED, 0)
        others = sum(n for k, n in tally.items() if k not in (Outcome.SUCCEEDED, Outcome.REFUSED))
        summary = ", ".join(f"{n} {s}" for s, n in sorted(self._view.counts.items()))
        if self._view.phase == "dry_run" and succeeded == 0:
            return PlanStatus.FAILED, f"no item passed the dry run ({summary})"
        refused = tally.get(Outcome.REFUSED, 0)
        if others == 0 and refused:
            return PlanStatus.COMPLETED, f"done; {refused} refused by policy ({summary})"
        if others == 0:
            return PlanStatus.COMPLETED, f"every item done ({summary})"
        if succeeded == 0 and failed > 0:
            return PlanStatus.FAILED, f"no item succeeded ({summary})"
        return PlanStatus.COMPLETED_WITH_FAILURES, summary
