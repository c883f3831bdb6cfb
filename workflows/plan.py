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

A manual item waits for a person's `confirm` or `fail` (signal or update) or its
timeout instead of running an execution (`plan_manual.py`).

Since PLAN_TELLS_AND_HOLDS (asked in the first activation) a plan tells people when its dry
run awaits approval, when it pauses at its error threshold and when it ends
(`plan_telling.py`), and holds the items of an account the worker's accounts file refuses
now (`plan_holds.py`). Each item runs under its account's policy (`PlanInput.policy_for`).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.plans import PlanActivities, WaveMark
    from domain.manual import ManualDecision
    from domain.notifications import NotificationEvent
    from domain.plan import (
        ItemPage,
        ItemSettled,
        ItemState,
        ItemWaiting,
        Outcome,
        PlanControl,
        PlanCursor,
        PlanDecision,
        PlanInput,
        PlanItem,
        PlanStatus,
        PlanView,
        WavePlan,
        WaveProgress,
        WaveState,
        final_status,
        outcome,
        ramp_limit,
    )
    from workflows import search_attributes as sa
    from workflows import versions
    from workflows.options import READ_DEADLINE, RECORD_RETRY, STORE_TIMEOUT
    from workflows.outcomes import describe_error, refuse_update
    from workflows.plan_controls import PlanControls
    from workflows.plan_holds import HELD, PlanHolds
    from workflows.plan_items import PlanItems, approved_only
    from workflows.plan_ledger import PlanLedger
    from workflows.plan_telling import PlanTelling

PAGE = 100
FLUSH_AT = 50
FLUSH_EVERY = timedelta(seconds=10)


class _Aborted(Exception):
    """Unwinds a wave once the plan is being aborted."""


@workflow.defn(name="PlanWorkflow")
class PlanWorkflow:
    @workflow.init
    def __init__(self, plan: PlanInput) -> None:
        self._input = plan
        self._view = plan.view
        self._ledger = PlanLedger(plan.view, plan.cursor or PlanCursor(wave=0, offset=0))
        self._telling = PlanTelling(self._ledger, plan)
        self._controls = PlanControls(self._ledger, plan, self._telling)
        self._items = PlanItems(self._ledger, plan, lambda: self._controls.abort is not None)
        self._holds = PlanHolds(self._ledger, plan)

    # ---- run ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, plan: PlanInput) -> PlanView:
        # Decided here, in the first activation: a plan tells and holds for its whole run, or never.
        self._telling.on = self._holds.on = workflow.patched(versions.PLAN_TELLS_AND_HOLDS)
        if self._telling.on:
            self._ledger.write_behind()
        customers = self._view.customer_ids
        attributes = [sa.EXECUTION_STATUS.value_set(self._view.status.value)]
        if len(customers) == 1:
            attributes.append(sa.CUSTOMER_ID.value_set(customers[0]))
        workflow.upsert_search_attributes(attributes)
        try:
            if self._view.phase == "dry_run":
                if not self._ledger.cursor.phase_done:
                    await self._run_phase()
                    self._ledger.cursor = PlanCursor(wave=0, offset=0, phase_done=True)
                if self._controls.abort is None and await self._controls.approved():
                    decision = self._controls.decision
                    self._items.manual.approved(decision[1].items if decision is not None else None)
                    await self._run_phase()
            else:
                await self._run_phase()
        except Exception as err:  # never continue-as-new or an eviction (BaseExceptions)
            if is_cancelled_exception(err):
                raise
            # One way out: the plan says how it ended, in the store too, before it fails.
            reason = f"the plan itself failed: {describe_error(err)}"
            self._view.finished_at = workflow.now()
            self._ledger.set_status(PlanStatus.FAILED, reason)
            self._view.sequence += 1
            with contextlib.suppress(ActivityError):
                await workflow.execute_activity_method(
                    PlanActivities.finish_plan, self._view.model_copy(deep=True),
                    start_to_close_timeout=STORE_TIMEOUT, schedule_to_close_timeout=READ_DEADLINE,
                    retry_policy=RECORD_RETRY, task_queue=self._ledger.store_queue,
                )
            self._telling.tell(NotificationEvent.PLAN_FINISHED)
            await self._telling.drain()
            raise ApplicationError(reason, type="PlanFailed", non_retryable=True) from None
        return await self._finish()

    async def _run_phase(self) -> None:
        waves, ledger = self._view.waves, self._ledger
        while ledger.cursor.wave < len(waves):
            wave = waves[ledger.cursor.wave]
            try:
                await self._run_wave(wave)
            except _Aborted:
                break
            ledger.cursor = PlanCursor(wave=ledger.cursor.wave + 1, offset=0,
                                       failed_waves=ledger.cursor.failed_waves, phase_done=ledger.cursor.phase_done)
        abort = self._controls.abort
        if abort is not None:
            if ledger.cursor.wave < len(waves):
                self._holds.drop(waves[ledger.cursor.wave])
            for wave in waves[ledger.cursor.wave:]:
                if wave.state in (WaveState.PENDING, WaveState.WAITING, WaveState.RUNNING):
                    await self._close_wave(wave, ItemState.NOT_STARTED, f"plan aborted: {abort.reason}")
        await ledger.flush_landed()

    # ---- one wave ----------------------------------------------------------------------

    async def _run_wave(self, wave: WaveProgress) -> None:
        spec, cursor = self._spec(wave), self._ledger.cursor
        blocked = [d for d in spec.depends_on if d in cursor.failed_waves]
        if blocked and wave.state is WaveState.PENDING:
            names = ", ".join(self._view.waves[d].name for d in blocked)
            cursor.failed_waves.append(wave.index)
            await self._close_wave(wave, ItemState.SKIPPED, f"skipped: wave {names} failed")
            return
        if wave.size == 0:
            wave.state = WaveState.SUCCEEDED
            return
        if wave.state is WaveState.PENDING and spec.wait_seconds > 0:
            wave.state = WaveState.WAITING
            self._ledger.event(f"wave {wave.name}: waiting {spec.wait_seconds:g} s before it starts")
            with contextlib.suppress(TimeoutError):  # the wait is over: the wave starts
                await workflow.wait_condition(lambda: self._controls.abort is not None,
                                              timeout=timedelta(seconds=spec.wait_seconds))
            if self._controls.abort is not None:
                raise _Aborted
        if wave.state in (WaveState.PENDING, WaveState.WAITING):
            wave.state, wave.started_at = WaveState.RUNNING, workflow.now()
            self._ledger.event(f"wave {wave.name}: started ({wave.size} items)")
        await self._drive(wave, spec)
        failed = any(outcome(s) is Outcome.FAILED and n for s, n in wave.counts.items())
        wave.state, wave.finished_at = (WaveState.FAILED if failed else WaveState.SUCCEEDED), workflow.now()
        if failed:
            self._ledger.cursor.failed_waves.append(wave.index)
        self._ledger.event(f"wave {wave.name}: {wave.state.value.lower()}")
        if self._ledger.behind:
            self._ledger.flush_soon()  # the next wave starts while it is written
        else:
            await self._ledger.flush()

    async def _drive(self, wave: WaveProgress, spec: WavePlan) -> None:
        """Start items while the rate control allows; return when the wave is done."""
        buffer: list[PlanItem] = []
        ledger, controls, unsettled, holds = self._ledger, self._controls, self._items.unsettled, self._holds
        limit = 1 if spec.mode.value == "ordered" else self._view.rate.concurrency(wave.size)
        while True:
            def free() -> int:
                return ramp_limit(limit, self._view.rate.ramp_up, ledger.cursor.succeeded_in_wave) - len(unsettled)

            def may_start() -> bool:
                return ((ledger.cursor.offset < wave.size or holds.ready()) and not controls.paused
                        and controls.abort is None and not self._threshold_reached() and not self._history_full()
                        and free() > 0)

            def wake() -> bool:
                return (may_start() or controls.abort is not None or self._flush_due(at_most=FLUSH_AT)
                        or (self._threshold_reached() and not controls.paused) or holds.due()
                        or (not unsettled and ((ledger.cursor.offset >= wave.size and not holds.any())
                                               or self._history_full())))

            with contextlib.suppress(TimeoutError):  # time to flush, or to check the pause deadline
                await workflow.wait_condition(wake, timeout=self._wake_timeout())
            if self._flush_due(at_most=FLUSH_AT) or self._flush_due(older_than=FLUSH_EVERY):
                if ledger.behind:
                    ledger.flush_soon()  # items go on starting while the outcomes are written
                else:
                    await ledger.flush()
            if controls.abort is not None:
                await self._items.cancel_running()
                raise _Aborted
            if controls.paused and workflow.now() - controls.paused_at >= self._view.rate.pause_timeout:
                controls.aborted_by_reclaim(f"paused for {self._view.rate.pause_timeout} without a resume")
                continue
            if self._threshold_reached() and not controls.paused:
                threshold = self._view.rate.threshold(self._view.total)
                controls.pause(f"error threshold reached: {self._view.failures} failed items (threshold {threshold})")
                self._telling.tell(NotificationEvent.PLAN_PAUSED)
                continue
            if holds.due():
                await holds.recheck(wave)
            if not unsettled and ledger.cursor.offset >= wave.size and not holds.any():
                return
            if not unsettled and self._history_full():
                await self._continue_as_new()
            while may_start():
                released = holds.take_ready(free())
                if released:  # items held for their account, allowed again: before new ones
                    for item in released:
                        self._items.start(wave, item, was=HELD)
                    continue
                if not buffer:
                    buffer = await workflow.execute_activity_method(
                        PlanActivities.load_plan_items,
                        ItemPage(plan_id=self._view.plan_id, wave=wave.index, offset=ledger.cursor.offset,
                                 limit=PAGE, approved_only=approved_only(ledger)),
                        start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY,
                        task_queue=ledger.store_queue,
                    )
                    if not buffer:
                        raise ApplicationError(f"wave {wave.name} has fewer stored items than planned",
                                               type="PlanItemsMissing", non_retryable=True)
                    continue  # the rate control may have changed while the page loaded
                if holds.on:
                    batch = buffer[:min(free(), wave.size - ledger.cursor.offset)]
                    refused = await holds.refusals(batch)  # one activity per batch about to start
                    if not may_start():
                        continue  # paused, aborted or full while the accounts file was read: ask again
                    del buffer[:len(batch)]
                    ledger.cursor.offset += len(batch)
                    for i, item in enumerate(batch):
                        if item.position in refused:
                            holds.hold(wave, item, refused[item.position])
                        else:
                            self._items.start(wave, item, following=[*batch[i + 1:], *buffer])
                    continue
                item = buffer.pop(0)
                ledger.cursor.offset += 1
                self._items.start(wave, item, following=buffer)

    def _flush_due(self, *, at_most: int | None = None, older_than: timedelta | None = None) -> bool:
        """Outcomes to write now: `at_most` of them gathered, or gathered since `older_than` ago.
        Writing behind, not while a write is under way (they go with the next)."""
        ledger = self._ledger
        if not ledger.wants_flush():
            return False
        if at_most is not None:
            return len(ledger.results) >= at_most
        return older_than is not None and workflow.now() - ledger.last_flush >= older_than

    def _wake_timeout(self) -> timedelta | None:
        timeouts = []
        if self._ledger.wants_flush():
            timeouts.append(max(FLUSH_EVERY - (workflow.now() - self._ledger.last_flush), timedelta(seconds=1)))
        if self._controls.paused:
            timeouts.append(max(self._view.rate.pause_timeout - (workflow.now() - self._controls.paused_at),
                                timedelta(seconds=1)))
        if self._holds.any():
            timeouts.append(max(self._holds.until_check(), timedelta(seconds=1)))
        return min(timeouts) if timeouts else None

    def _threshold_reached(self) -> bool:
        threshold = self._view.rate.threshold(self._view.total)
        return threshold is not None and self._view.failures >= threshold

    def _history_full(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._input.history_limit

    def _spec(self, wave: WaveProgress) -> WavePlan:
        return WavePlan(index=wave.index, name=wave.name, size=wave.size, depends_on=wave.depends_on,
                        wait_seconds=wave.wait_seconds, mode=wave.mode)

    async def _close_wave(self, wave: WaveProgress, status: ItemState, reason: str) -> None:
        """Items of a wave that will never start: counted and stored in one step."""
        remaining = wave.size - sum(n for s, n in wave.counts.items() if s != ItemState.PENDING.value)
        if remaining > 0:
            self._ledger.count_many(wave, status.value, remaining)
        wave.state = WaveState.SKIPPED if status is ItemState.SKIPPED else WaveState.NOT_STARTED
        wave.finished_at = workflow.now()
        self._items.manual.close_wave(wave.index, status.value)
        self._ledger.event(f"wave {wave.name}: {reason}")
        await workflow.execute_activity_method(
            PlanActivities.mark_plan_wave,
            WaveMark(plan_id=self._view.plan_id, wave=wave.index, status=status, reason=reason,
                     approved_only=approved_only(self._ledger)),
            start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY, task_queue=self._ledger.store_queue,
        )

    # ---- steering: signals, updates, the progress query ---------------------------------

    @workflow.signal(name="pause")
    def pause_signal(self, control: PlanControl) -> None:
        self._controls.control("pause", control, "signal")

    @workflow.signal(name="resume")
    def resume_signal(self, control: PlanControl) -> None:
        self._controls.control("resume", control, "signal")

    @workflow.signal(name="abort")
    def abort_signal(self, control: PlanControl) -> None:
        self._controls.control("abort", control, "signal")

    @workflow.update(name="pause")
    def pause_update(self, control: PlanControl) -> str:
        return self._controls.control("pause", control, "update")

    @pause_update.validator
    def _validate_pause(self, control: PlanControl) -> None:
        refuse_update(self._controls.refusal(control, "pause"))

    @workflow.update(name="resume")
    def resume_update(self, control: PlanControl) -> str:
        return self._controls.control("resume", control, "update")

    @resume_update.validator
    def _validate_resume(self, control: PlanControl) -> None:
        refuse_update(self._controls.refusal(control, "resume"))

    @workflow.update(name="abort")
    def abort_update(self, control: PlanControl) -> str:
        return self._controls.control("abort", control, "update")

    @abort_update.validator
    def _validate_abort(self, control: PlanControl) -> None:
        refuse_update(self._controls.refusal(control, "abort"))

    @workflow.signal(name="approve")
    def approve_signal(self, decision: PlanDecision) -> None:
        self._controls.decide(decision, True, "signal")

    @workflow.signal(name="reject")
    def reject_signal(self, decision: PlanDecision) -> None:
        self._controls.decide(decision, False, "signal")

    @workflow.update(name="approve")
    def approve_update(self, decision: PlanDecision) -> str:
        return self._controls.decide(decision, True, "update")

    @approve_update.validator
    def _validate_approve(self, decision: PlanDecision) -> None:
        refuse_update(self._controls.decision_refusal(decision, True))

    @workflow.update(name="reject")
    def reject_update(self, decision: PlanDecision) -> str:
        return self._controls.decide(decision, False, "update")

    @reject_update.validator
    def _validate_reject(self, decision: PlanDecision) -> None:
        refuse_update(self._controls.decision_refusal(decision, False))

    @workflow.signal(name="confirm")
    def confirm_signal(self, decision: ManualDecision) -> None:
        self._items.manual.decide(decision, True, "signal")

    @workflow.signal(name="fail")
    def fail_signal(self, decision: ManualDecision) -> None:
        self._items.manual.decide(decision, False, "signal")

    @workflow.update(name="confirm")
    def confirm_update(self, decision: ManualDecision) -> str:
        return self._items.manual.decide(decision, True, "update")

    @confirm_update.validator
    def _validate_confirm(self, decision: ManualDecision) -> None:
        refuse_update(self._items.manual.refusal(decision, True))

    @workflow.update(name="fail")
    def fail_update(self, decision: ManualDecision) -> str:
        return self._items.manual.decide(decision, False, "update")

    @fail_update.validator
    def _validate_fail(self, decision: ManualDecision) -> None:
        refuse_update(self._items.manual.refusal(decision, False))

    @workflow.signal(name="item_waiting")
    def item_waiting(self, waiting: ItemWaiting) -> None:
        self._items.waiting(waiting)

    @workflow.signal(name="item_settled")
    def item_settled(self, settled: ItemSettled) -> None:
        self._items.settled(settled)

    @workflow.query(name="progress")
    def progress(self) -> PlanView:
        return self._view

    # ---- the end -----------------------------------------------------------------------

    async def _continue_as_new(self) -> None:
        await self._ledger.flush_landed()
        await self._telling.drain()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._ledger.event(f"continuing as new after {workflow.info().get_current_history_length()} history events")
        update: dict[str, Any] = {"view": self._view, "cursor": self._ledger.cursor}
        if self._telling.on:
            update["told"] = self._telling.told
        workflow.continue_as_new(self._input.model_copy(update=update))

    async def _finish(self) -> PlanView:
        abort = self._controls.abort
        status, reason = final_status(self._view, abort.reason if abort is not None else None)
        self._view.finished_at = workflow.now()
        self._ledger.set_status(status, reason)
        self._view.sequence += 1
        await workflow.execute_activity_method(
            PlanActivities.finish_plan, self._view.model_copy(deep=True),
            start_to_close_timeout=timedelta(minutes=5), retry_policy=RECORD_RETRY,
            task_queue=self._ledger.store_queue,
        )
        self._telling.tell(NotificationEvent.PLAN_FINISHED)  # the report is stored: its link works
        await self._telling.drain()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

