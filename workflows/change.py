"""The change itself: backup, apply, verify, and its compensation.

Compensation (revert) is registered before the step it undoes, so a half-done
apply is undone too, and runs on any failure or cancellation after the backup.
A worker evicting the workflow from its cache is neither: it runs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import Priority
from temporalio.exceptions import ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.execution import ExecutionActivities
    from activities.watch import CheckInput, MetricsInput, WatchActivities
    from domain.execution import ActionStepInput, Assessment, BackupRecord, ExecutionRequest, StepResult
    from domain.status import ExecutionStatus
    from domain.watch import MetricValues, WatchVerdict, checks
    from workflows import versions
    from workflows.lease import LeaseHandle
    from workflows.ledger import Ended, Ledger
    from workflows.options import (
        APPLY_HEARTBEAT,
        MUTATE_DEADLINE,
        MUTATE_RETRY,
        READ_DEADLINE,
        READ_RETRY,
        REVERT_DEADLINE,
        VERIFY_RETRY,
    )
    from workflows.outcomes import describe_error
    from workflows.priority import UNDO

S = ExecutionStatus
#: The span before the change a watch measures against: long enough to smooth a spike, short
#: enough to be today's workload.
BASELINE_SPAN = timedelta(hours=3)
Undo = tuple[str, Callable[[], Awaitable[Any]]]


class Change:
    def __init__(self, ledger: Ledger, request: ExecutionRequest, lease: LeaseHandle) -> None:
        self._ledger = ledger
        self._options = request.options
        self._lease = lease
        self.baseline: MetricValues | None = None
        """The watched metrics before the change (since TELLING_AHEAD, for a kind that watches)."""
        self.watch_period = timedelta(0)
        self.completed_at: datetime | None = None

    async def run(self, step: ActionStepInput, assessment: Assessment) -> None:
        """Backup, apply, verify, watch; ends COMPLETED, or compensated (ROLLED_BACK / ROLLBACK_FAILED)."""
        ledger, opts = self._ledger, self._options
        self.watch_period = self._watch_period(assessment)
        self.baseline = await self._baseline(step) if self.watch_period else None
        ledger.transition(S.BACKING_UP, "saving what is needed to undo the change")
        try:
            backup: BackupRecord = await workflow.execute_activity_method(
                ExecutionActivities.backup, step,
                start_to_close_timeout=opts.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
                retry_policy=MUTATE_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except (Exception, asyncio.CancelledError) as err:  # never an eviction
            if is_cancelled_exception(err):
                ledger.transition(S.CANCELLED, "cancelled before any change", reason="cancelled")
                raise
            raise Ended(S.FAILED, f"backup failed, nothing was changed: {describe_error(err)}") from None
        ledger.view.backups.append(backup)
        step.backup = backup
        ledger.log(f"backup ready{': ' + backup.backup_id if backup.backup_id else ''}")

        compensations: list[Undo] = []
        try:
            ledger.transition(S.APPLYING, "changing the resource")
            compensations.append(("revert", lambda: self.revert(step)))  # before the step it undoes
            result = await self._apply(step, assessment)
            ledger.log(f"applied: {result.message}")
            ledger.transition(S.VERIFYING, "waiting for the resource to reach the target state")
            verified: StepResult = await workflow.execute_activity_method(
                ExecutionActivities.verify, step,
                # One look per attempt (the retry policy polls): an attempt lost with its worker
                # is retried after a step timeout, well inside the verification window.
                start_to_close_timeout=min(opts.step_timeout, opts.verify_timeout / 2),
                schedule_to_close_timeout=opts.verify_timeout,
                retry_policy=VERIFY_RETRY,
            )
            ledger.view.rollback_available_until = workflow.now() + opts.rollback_window
            ledger.view.actual_monthly_savings = float(
                verified.data.get("monthly_savings", assessment.estimated_monthly_savings)
            )
            if versions.decided_at_start():  # free before COMPLETED is seen (a rollback takes it again)
                await self._lease.release()
            self.completed_at = workflow.now()
            ledger.transition(S.COMPLETED, f"verified: {verified.message}")
        except (Exception, asyncio.CancelledError) as err:  # cancellation compensates too; eviction does not
            cancelled = is_cancelled_exception(err)
            cause = "cancelled" if cancelled else describe_error(err)
            await asyncio.shield(asyncio.ensure_future(self.compensate(compensations, cause, cancelled)))
            if cancelled:
                raise

    async def _apply(self, step: ActionStepInput, assessment: Assessment) -> StepResult:
        """The apply, within MUTATE_DEADLINE. Since TIMING_LAUNCHES a kind that waits for a launch
        (a DRS drill: its job may stay PENDING/STARTED for hours) declares how long it may take in
        all (`apply_deadline`): each call polls for an attempt (heartbeating) and hands a "not yet"
        back, the workflow asks again after a durable timer, until done or the declared deadline
        passes. What it launched so far is kept at once, so no call's instants are lost."""
        opts = self._options
        declared = assessment.traits.apply_deadline if assessment.traits is not None else None
        if not versions.times_launches() or declared is None:
            return await workflow.execute_activity_method(
                ExecutionActivities.apply, step,
                start_to_close_timeout=opts.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
                retry_policy=MUTATE_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        until, asking = workflow.now() + declared, step.model_copy(update={"hand_back": True})
        while True:
            result: StepResult = await workflow.execute_activity_method(
                ExecutionActivities.apply, asking,
                start_to_close_timeout=opts.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
                heartbeat_timeout=APPLY_HEARTBEAT,
                retry_policy=MUTATE_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._keep_launches(result)
            if not result.data.get("in_progress"):
                return result
            if workflow.now() >= until:
                raise ApplicationError(f"not done within the kind's apply deadline ({declared}): {result.message}",
                                       type="ApplyDeadlinePassed", non_retryable=True)
            wait = min(max(float(result.data.get("poll_after_seconds") or 30.0), 1.0), 300.0)
            await workflow.sleep(min(timedelta(seconds=wait), until - workflow.now()))

    def _keep_launches(self, result: StepResult) -> None:
        """The first instant each thing was seen launched (server clock): the per-server time to launch."""
        launched = result.data.get("launched_at")
        if isinstance(launched, dict):
            for key, at in launched.items():
                self._ledger.view.launches.setdefault(str(key), datetime.fromisoformat(str(at)))

    def _watch_period(self, assessment: Assessment) -> timedelta:
        """Since TELLING_AHEAD: the kind's bake period unless the execution's options say otherwise,
        within the rollback window (the watch undoes the change as a rollback would)."""
        if not versions.tells_ahead() or assessment.traits is None:
            return timedelta(0)
        chosen = self._options.watch_period
        return min(assessment.traits.watch_period if chosen is None else chosen, self._options.rollback_window)

    async def _baseline(self, step: ActionStepInput) -> MetricValues:
        """The resource's watched metrics over the hours before the change: what 'worse' is measured
        against."""
        now = workflow.now()
        baseline: MetricValues = await workflow.execute_activity_method(
            WatchActivities.read_metrics,
            MetricsInput(recommendation=step.recommendation, start=now - BASELINE_SPAN, end=now),
            start_to_close_timeout=timedelta(minutes=1), schedule_to_close_timeout=READ_DEADLINE,
            retry_policy=READ_RETRY,
        )
        self._ledger.log("baseline: " + (", ".join(
            f"{k.split('/')[-1]} {'none' if v is None else f'{v:g}'}" for k, v in baseline.values.items())))
        return baseline

    async def watch(self, step: ActionStepInput) -> str | None:
        """After COMPLETED, within the rollback window: look at the metrics six times over the
        bake period. The evidence of a regression (the rollback window then undoes the change
        with it as the reason), or None when the bake passed."""
        if self.baseline is None or not self.watch_period:
            return None
        ledger, since, period = self._ledger, workflow.now(), self.watch_period
        looks = checks(period)
        for n, at in enumerate(looks, 1):
            if since + at > workflow.now():
                await workflow.sleep(since + at - workflow.now())
            verdict: WatchVerdict = await workflow.execute_activity_method(
                WatchActivities.check_metrics,
                CheckInput(recommendation=step.recommendation, baseline=self.baseline, start=since,
                           end=workflow.now(), ratio=self._options.watch_ratio),
                start_to_close_timeout=timedelta(minutes=1), schedule_to_close_timeout=READ_DEADLINE,
                retry_policy=READ_RETRY,
            )
            if verdict.regressed:
                return "the watch saw a regression: " + "; ".join(verdict.evidence)
            ledger.note(f"watch {n}/{len(looks)}: {verdict.summary or 'no metric data'}")
        ledger.note(f"watched for {period}: no regression")
        return None

    async def compensate(self, compensations: list[Undo], cause: str, cancelled: bool) -> None:
        ledger = self._ledger
        ledger.transition(S.ROLLING_BACK, f"undoing the change after: {cause}", reason=cause)
        for name, undo in reversed(compensations):
            try:
                await undo()
            except Exception as err:
                ledger.transition(S.ROLLBACK_FAILED, f"{name} failed: {describe_error(err)}",
                                  reason=f"{cause}; {name} failed: {describe_error(err)}")
                return
        if cancelled:
            ledger.transition(S.CANCELLED, "cancelled; the change was undone", reason="cancelled")
        else:
            ledger.transition(S.ROLLED_BACK, f"the change was undone after: {cause}", reason=cause)

    async def revert(self, step: ActionStepInput) -> StepResult:
        result: StepResult = await workflow.execute_activity_method(
            ExecutionActivities.revert, step,
            start_to_close_timeout=self._options.step_timeout, schedule_to_close_timeout=REVERT_DEADLINE,
            retry_policy=MUTATE_RETRY,
            priority=Priority(priority_key=UNDO) if versions.tells_ahead() else Priority.default,
        )
        self._ledger.log(f"reverted: {result.message}")
        if result.data.get("note"):
            self._ledger.log(str(result.data["note"]))
        return result
