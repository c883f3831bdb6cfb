"""ExecutionWorkflow: the whole life of one change to one resource (DESIGN.md, "One execution").

Everything that touches AWS or the database is an activity; this module only
decides. Compensation (revert) is registered before the step it undoes and runs
on any failure or cancellation after the first mutation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ApplicationError,
    FailureError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType, ChildWorkflowCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE_TYPES
    from activities.execution import ExecutionActivities
    from activities.records import RecordActivities, records_task_queue
    from domain.execution import (
        ActionStepInput,
        ApprovalInput,
        ApprovalRecord,
        Assessment,
        BackupRecord,
        Decision,
        ExecutionRequest,
        ExecutionView,
        LastChange,
        Observation,
        PermissionReport,
        Refusal,
        ResourceRef,
        RollbackInput,
        StepLogEntry,
        StepResult,
        ValidateInput,
        lease_id_for,
    )
    from domain.plan import ItemSettled, ItemWaiting
    from domain.policy import (
        approval_refusal,
        approval_requirement,
        assess_risk,
        cooldown_refusal,
        protection,
    )
    from domain.presentation import execution_details, lease_summary
    from domain.status import TERMINAL, ExecutionStatus, can_transition, progress_percent
    from workflows import search_attributes as sa
    from workflows import versions
    from workflows.lease import LeaseInput, ResourceLeaseWorkflow
    from workflows.outcomes import closing_failure, describe_error

S = ExecutionStatus

# Reads retry until READ_DEADLINE, not a count: a throttling streak or a database restart
# outlasts any small number of attempts, and a read changes nothing however often it runs.
READ_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
READ_DEADLINE = timedelta(minutes=10)
MUTATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
VERIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=15),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
#: A read-model write as a local activity: one attempt, then the durable way (see _record).
LOCAL_RECORD_TIMEOUT = timedelta(seconds=5)
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
MUTATE_DEADLINE = timedelta(minutes=30)
#: A rollback that waits for a busy resource asks again after these, doubling in between.
LEASE_RETRY_FIRST = timedelta(seconds=5)
LEASE_RETRY_MAX = timedelta(minutes=5)
REVERT_DEADLINE = timedelta(hours=6)


class _Rejected(Exception):
    """Ends the execution early with a terminal status and a reason (not a failure)."""

    def __init__(self, status: ExecutionStatus, reason: str, refusal: Refusal | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.refusal = refusal


@workflow.defn(name="ExecutionWorkflow")
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, request: ExecutionRequest) -> None:
        rec = request.recommendation
        now = workflow.now()
        self._request = request
        self._view = ExecutionView(
            execution_id=workflow.info().workflow_id,
            recommendation_id=rec.id,
            customer_id=rec.customer_id,
            account_id=rec.account_id,
            region=rec.region,
            kind=rec.kind,
            resource_id=rec.resource_id,
            requested_by=request.requested_by,
            status=S.PENDING,
            step="submitted",
            progress_percent=0,
            dry_run=request.options.dry_run,
            estimated_monthly_savings=rec.estimated_monthly_savings,
            started_at=now,
            updated_at=now,
        )
        self._decision: Decision | None = None
        self._rollback: RollbackInput | None = None
        self._lease: workflow.ChildWorkflowHandle[Any, Any] | None = None
        self._records: list[Awaitable[Any]] = []
        self._observed: Observation | None = None
        self._plan_notified = False
        self._rollback_waiting = False

    # ---- run ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: ExecutionRequest) -> ExecutionView:
        rec = request.recommendation
        versions.decide_at_start()
        workflow.upsert_search_attributes(
            [
                sa.CUSTOMER_ID.value_set(rec.customer_id),
                sa.ACCOUNT_ID.value_set(rec.account_id),
                sa.RESOURCE_ID.value_set(rec.resource_id),
                sa.ACTION_KIND.value_set(rec.kind),
            ]
        )
        closing = versions.decided_at_start()
        cancelled = False
        try:
            await self._execute()
            if self._view.status is S.COMPLETED:
                await self._rollback_window()
        except _Rejected as end:
            if closing and end.status is S.PLANNED:
                # A dry run's PLANNED is the signal to run it for real (a plan does so at once):
                # the resource is free by then. A person's decision shows at once instead; the
                # client waits for a settled holder's lease (Executions.start).
                await self._release_lease()
            self._view.refusal = end.refusal
            self._transition(end.status, end.reason, reason=end.reason)
        except (Exception, asyncio.CancelledError) as err:  # never an eviction
            if is_cancelled_exception(err):
                cancelled = True
                if self._view.status not in (S.CANCELLED, S.COMPLETED) and can_transition(
                    self._view.status, S.CANCELLED
                ):
                    self._transition(S.CANCELLED, "cancelled before any change", reason="cancelled")
            elif closing:
                self._close_on_error(err)
            else:
                raise
        # Not in a `finally`: a worker evicting this workflow from its cache (a BaseException
        # that is not ours to handle) must not run commands. A failed workflow's lease dies
        # with it (parent close policy).
        await self._release_lease()
        await self._drain_records()
        if closing:
            failure = closing_failure(self._view, rollback_requested=self._rollback is not None)
            if failure is not None:  # before the cancellation: a failed undo is an alarm whatever started it
                raise failure
        if cancelled:
            raise asyncio.CancelledError("execution cancelled")
        if self._view.status is S.ROLLBACK_FAILED:
            raise ApplicationError(
                f"rollback failed: {self._view.reason}", type="RollbackFailed", non_retryable=True
            )
        return self._view

    def _close_on_error(self, err: BaseException) -> None:
        """Every way out ends in a status a person can read: an error outside the change itself
        (access denied while validating, a store that never answers) is FAILED with its reason."""
        why = describe_error(err)
        if self._view.status is S.COMPLETED:  # the change stands; only the backup clean-up failed
            self._view.rollback_available_until = None
            self._log(f"backup clean-up failed, backups kept: {why}")
            self._record()
            return
        if self._view.status in TERMINAL:
            return
        self._transition(S.FAILED, f"failed before any change: {why}", reason=why)

    async def _execute(self) -> None:
        self._transition(S.VALIDATING, "checking the live resource")
        await self._acquire_lease()
        assessment = await self._validate()
        if self._patched_after_local_activity(versions.COOLDOWN):
            await self._check_cooldown()
        opts = self._request.options
        auto_approved = self._auto_approved(assessment)

        if opts.dry_run:
            report: PermissionReport = await workflow.execute_activity_method(
                ExecutionActivities.check_permissions,
                self._step_input(assessment),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=READ_DEADLINE,
                retry_policy=READ_RETRY,
            )
            report.plan = assessment.plan
            self._view.permission_report = report
            if not report.allowed:
                raise _Rejected(S.REJECTED_BY_VALIDATION, "no permission for: " + ", ".join(report.denied))
            raise _Rejected(S.PLANNED, "dry run: permissions checked, nothing changed")

        approved_by_human = False
        if not auto_approved and self._request.plan_approval is not None:
            self._accept_plan_approval()
            approved_by_human = True
        elif not auto_approved:
            await self._await_approval()
            approved_by_human = True
            # Hours may have passed: look again before touching anything.
            assessment = await self._validate(again=True)

        if opts.not_before is not None and opts.not_before > workflow.now():
            self._transition(S.SCHEDULED, f"waiting for the maintenance window at {opts.not_before.isoformat()}")
            await workflow.sleep(opts.not_before - workflow.now())
            assessment = await self._validate(again=True)
            # The resource may have become riskier while waiting (tagged production, say):
            # an auto-approval given before the wait does not cover it.
            if (self._patched_after_local_activity(versions.POLICY_AFTER_MAINTENANCE_WAIT)
                    and not approved_by_human
                    and not self._auto_approved(assessment)):
                await self._await_approval()
                assessment = await self._validate(again=True)

        await self._change(assessment)

    @staticmethod
    def _patched_after_local_activity(patch_id: str) -> bool:
        if versions.decided_at_start():
            return True
        return versions.legacy_patched(patch_id, implied_by=versions.READ_MODEL_LOCAL_WRITES)

    async def _check_cooldown(self) -> None:
        policy, rec = self._request.policy, self._request.recommendation
        if policy.cooldown_days <= 0:
            return
        last: LastChange | None = await workflow.execute_local_activity_method(
            RecordActivities.last_change,
            ResourceRef(account_id=rec.account_id, region=rec.region, resource_id=rec.resource_id,
                        exclude_execution_id=self._view.execution_id),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=READ_DEADLINE,
            retry_policy=READ_RETRY,
        )
        refusal = cooldown_refusal(policy, last.at if last else None, workflow.now())
        if refusal:
            raise _Rejected(S.REJECTED_BY_VALIDATION, f"{refusal} (execution {last.execution_id if last else '?'})",
                            Refusal.COOLDOWN)

    def _auto_approved(self, assessment: Assessment) -> bool:
        """Score the risk of what validation saw and ask the policy; pure, so safe to repeat."""
        assert assessment.traits is not None
        opts, policy, rec = self._request.options, self._request.policy, self._request.recommendation
        tags = assessment.observed.tags
        savings, savings_note = rec.estimated_monthly_savings, None
        if versions.decided_at_start():
            # The submitter's figure could be understated to slip past a human: the larger counts.
            savings = max(rec.estimated_monthly_savings, assessment.estimated_monthly_savings)
            savings_note = (f"savings: submitted ${rec.estimated_monthly_savings:,.2f}/month, "
                            f"{rec.kind} estimates ${assessment.estimated_monthly_savings:,.2f}/month "
                            f"from the live resource; ${savings:,.2f} counts")
        risk = assess_risk(policy, assessment.traits, savings, tags)
        if risk.level != self._view.risk:
            workflow.upsert_search_attributes([sa.RISK_LEVEL.value_set(risk.level.value)])
        self._view.risk, self._view.risk_reasons = risk.level, risk.reasons
        requirement = approval_requirement(
            policy, assessment.traits, risk, savings, tags, auto_approve_requested=opts.auto_approve,
        )
        self._view.approval_reasons = [*requirement.reasons, *([savings_note] if savings_note else [])]
        return requirement.auto_approved

    async def _validate(self, again: bool = False) -> Assessment:
        assessment: Assessment = await workflow.execute_local_activity_method(
            ExecutionActivities.validate,
            ValidateInput(execution_id=self._view.execution_id, recommendation=self._request.recommendation,
                          expected=self._request.expected),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=READ_DEADLINE,
            retry_policy=READ_RETRY,
        )
        self._observed = assessment.observed
        prefix = "changed while waiting: " if again else ""
        if not assessment.valid:
            raise _Rejected(S.REJECTED_BY_VALIDATION, prefix + (assessment.reason or "invalid"), Refusal.CHANGED)
        protected = protection(self._request.policy, assessment.observed.tags)
        if protected:
            kind, why = protected
            raise _Rejected(S.REJECTED_BY_VALIDATION, prefix + why, Refusal(kind))
        self._log(f"validated: {'; '.join(assessment.plan) or 'ok'}")
        return assessment

    # ---- approval ----------------------------------------------------------------------

    async def _await_approval(self) -> None:
        timeout = self._request.options.approval_timeout
        self._transition(S.AWAITING_APPROVAL, "waiting for a human: " + "; ".join(self._view.approval_reasons))
        try:
            await workflow.wait_condition(lambda: self._decision is not None, timeout=timeout)
        except TimeoutError:
            raise _Rejected(S.EXPIRED, f"no decision within {timeout}") from None
        if self._decision is Decision.REJECT:
            last = self._view.approvals[-1]
            raise _Rejected(S.REJECTED, f"rejected by {last.actor}: {last.comment}".rstrip(": "))
        self._log(f"approved by {self._view.approvals[-1].actor}")

    def _accept_plan_approval(self) -> None:
        """The approved dry-run report covers this item: its approval is this execution's."""
        grant = self._request.plan_approval
        assert grant is not None
        refusal = approval_refusal(self._request.policy, grant.actor, grant.role, self._request.requested_by)
        if refusal:
            raise _Rejected(S.REJECTED_BY_VALIDATION, f"the plan's approval does not cover this item: {refusal}",
                            Refusal.NOT_COVERED)
        self._view.approvals.append(ApprovalRecord(
            id=str(workflow.uuid4()), execution_id=self._view.execution_id, actor=grant.actor, role=grant.role,
            decision=Decision.APPROVE, comment=grant.comment, at=grant.at, accepted=True,
            via=f"plan {grant.plan_id}",
        ))
        self._log(f"approved by {grant.actor} with the dry run of plan {grant.plan_id}")

    def _refusal(self, decision: Decision, attempt: ApprovalInput) -> str | None:
        if self._decision is not None:  # decided, perhaps in this very workflow task
            taken = next((a for a in reversed(self._view.approvals) if a.accepted), None)
            verb = "approved" if self._decision is Decision.APPROVE else "rejected"
            return f"already {verb} by {taken.actor}" if taken else f"already {verb}"
        if self._view.status is not S.AWAITING_APPROVAL:
            return f"execution is {self._view.status.value}, not awaiting approval"
        return approval_refusal(
            self._request.policy, attempt.actor, attempt.role, self._request.requested_by,
            approve=decision is Decision.APPROVE,
        )

    def _decide(self, decision: Decision, attempt: ApprovalInput, via: str) -> ApprovalRecord:
        refusal = self._refusal(decision, attempt)
        record = ApprovalRecord(
            id=str(workflow.uuid4()),
            execution_id=self._view.execution_id,
            actor=attempt.actor,
            role=attempt.role,
            decision=decision,
            comment=attempt.comment,
            at=workflow.now(),
            accepted=refusal is None,
            refusal=refusal,
            via=via,
        )
        self._view.approvals.append(record)
        if refusal is None:
            self._decision = decision
            self._log(f"{decision.value} by {attempt.actor} via {via}")
        else:
            self._log(f"refused {decision.value} by {attempt.actor} via {via}: {refusal}")
        self._record()
        return record

    @workflow.signal(name="approve")
    def approve_signal(self, attempt: ApprovalInput) -> None:
        self._decide(Decision.APPROVE, attempt, "signal")

    @workflow.signal(name="reject")
    def reject_signal(self, attempt: ApprovalInput) -> None:
        self._decide(Decision.REJECT, attempt, "signal")

    @workflow.update(name="approve")
    def approve_update(self, attempt: ApprovalInput) -> ApprovalRecord:
        return self._decide(Decision.APPROVE, attempt, "update")

    @approve_update.validator
    def _validate_approve(self, attempt: ApprovalInput) -> None:
        refusal = self._refusal(Decision.APPROVE, attempt)
        if refusal:
            raise ApplicationError(refusal, type="Refused", non_retryable=True)

    @workflow.update(name="reject")
    def reject_update(self, attempt: ApprovalInput) -> ApprovalRecord:
        return self._decide(Decision.REJECT, attempt, "update")

    @reject_update.validator
    def _validate_reject(self, attempt: ApprovalInput) -> None:
        refusal = self._refusal(Decision.REJECT, attempt)
        if refusal:
            raise ApplicationError(refusal, type="Refused", non_retryable=True)

    # ---- the change and its compensation -----------------------------------------------

    async def _change(self, assessment: Assessment) -> None:
        step = self._step_input(assessment)
        self._transition(S.BACKING_UP, "saving what is needed to undo the change")
        try:
            backup: BackupRecord = await workflow.execute_activity_method(
                ExecutionActivities.backup, step,
                start_to_close_timeout=self._request.options.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
                retry_policy=MUTATE_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except (Exception, asyncio.CancelledError) as err:  # never an eviction
            if is_cancelled_exception(err):
                self._transition(S.CANCELLED, "cancelled before any change", reason="cancelled")
                raise
            raise _Rejected(S.FAILED, f"backup failed, nothing was changed: {describe_error(err)}") from None
        self._view.backups.append(backup)
        step.backup = backup
        self._log(f"backup ready{': ' + backup.backup_id if backup.backup_id else ''}")

        compensations: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        try:
            self._transition(S.APPLYING, "changing the resource")
            # Registered before the forward step: a half-done apply is undone too.
            compensations.append(("revert", lambda: self._revert(step)))
            result: StepResult = await workflow.execute_activity_method(
                ExecutionActivities.apply, step,
                start_to_close_timeout=self._request.options.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
                retry_policy=MUTATE_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._log(f"applied: {result.message}")
            self._transition(S.VERIFYING, "waiting for the resource to reach the target state")
            verified: StepResult = await workflow.execute_activity_method(
                ExecutionActivities.verify, step,
                # One look per attempt (the retry policy polls): an attempt lost with its worker
                # is retried after a step timeout, well inside the verification window.
                start_to_close_timeout=min(self._request.options.step_timeout,
                                           self._request.options.verify_timeout / 2),
                schedule_to_close_timeout=self._request.options.verify_timeout,
                retry_policy=VERIFY_RETRY,
            )
            self._view.rollback_available_until = workflow.now() + self._request.options.rollback_window
            self._view.actual_monthly_savings = float(
                verified.data.get("monthly_savings", assessment.estimated_monthly_savings)
            )
            if versions.decided_at_start():  # free before COMPLETED is seen (a rollback takes it again)
                await self._release_lease()
            self._transition(S.COMPLETED, f"verified: {verified.message}")
        except (Exception, asyncio.CancelledError) as err:  # cancellation compensates too; eviction does not
            cancelled = is_cancelled_exception(err)
            cause = "cancelled" if cancelled else describe_error(err)
            await asyncio.shield(asyncio.ensure_future(self._compensate(compensations, cause, cancelled)))
            if cancelled:
                raise

    async def _compensate(
        self, compensations: list[tuple[str, Callable[[], Awaitable[Any]]]], cause: str, cancelled: bool
    ) -> None:
        self._transition(S.ROLLING_BACK, f"undoing the change after: {cause}", reason=cause)
        for name, undo in reversed(compensations):
            try:
                await undo()
            except Exception as err:
                self._transition(S.ROLLBACK_FAILED, f"{name} failed: {describe_error(err)}",
                                 reason=f"{cause}; {name} failed: {describe_error(err)}")
                return
        if cancelled:
            self._transition(S.CANCELLED, "cancelled; the change was undone", reason="cancelled")
        else:
            self._transition(S.ROLLED_BACK, f"the change was undone after: {cause}", reason=cause)

    async def _revert(self, step: ActionStepInput) -> StepResult:
        result: StepResult = await workflow.execute_activity_method(
            ExecutionActivities.revert, step,
            start_to_close_timeout=self._request.options.step_timeout, schedule_to_close_timeout=REVERT_DEADLINE,
            retry_policy=MUTATE_RETRY,
        )
        self._log(f"reverted: {result.message}")
        if result.data.get("note"):
            self._log(str(result.data["note"]))
        return result

    # ---- after completion --------------------------------------------------------------

    async def _rollback_window(self) -> None:
        await self._release_lease()
        step = self._step_input(None)
        step.backup = self._view.backups[-1] if self._view.backups else None
        window = self._request.options.rollback_window
        try:
            while True:
                await workflow.wait_condition(
                    lambda: self._rollback is not None, timeout=self._remaining_window()
                )
                if await self._try_acquire_lease():
                    break
                if versions.decided_at_start():  # an accepted request is carried out, never dropped
                    await self._await_free_resource()
                    break
                self._log("rollback refused: another execution is changing the resource; ask again later")
                self._rollback = None
                self._record()
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self._log("rollback window closed early by cancellation; the change stays, backups are kept")
            self._view.rollback_available_until = None
            self._record()
            raise
        if self._rollback is None:
            self._view.rollback_available_until = None
            if self._request.options.retain_backups or not self._view.backups:
                self._log(f"rollback window of {window} ended; backups kept")
            else:
                cleaned: StepResult = await workflow.execute_activity_method(
                    ExecutionActivities.cleanup, step,
                    start_to_close_timeout=self._request.options.step_timeout, schedule_to_close_timeout=MUTATE_DEADLINE,
                    retry_policy=MUTATE_RETRY,
                )
                self._log(f"rollback window ended; backups cleaned up: {cleaned.message}")
            self._record()
            return
        request = self._rollback
        cause = f"rollback requested by {request.actor}" + (f": {request.reason}" if request.reason else "")
        self._view.rollback_available_until = None
        await asyncio.shield(
            asyncio.ensure_future(self._compensate([("revert", lambda: self._revert(step))], cause, False))
        )

    async def _await_free_resource(self) -> None:
        """Hold an accepted rollback until the execution changing the resource lets go of it."""
        self._rollback_waiting = True
        self._log("rollback waits: another execution is changing the resource; it runs as soon as that ends")
        self._record()
        delay = LEASE_RETRY_FIRST
        while not await self._try_acquire_lease():
            await workflow.sleep(delay)
            delay = min(delay * 2, LEASE_RETRY_MAX)
        self._rollback_waiting = False

    def _remaining_window(self) -> timedelta:
        until = self._view.rollback_available_until
        assert until is not None
        return max(until - workflow.now(), timedelta(0))

    def _rollback_refusal(self, request: RollbackInput) -> str | None:
        if self._view.status is not S.COMPLETED or self._view.rollback_available_until is None:
            return f"execution is {self._view.status.value}; only a COMPLETED execution within its rollback window can be rolled back"
        if self._rollback is not None:
            return "a rollback was already requested"
        return None

    @workflow.signal(name="rollback")
    def rollback_signal(self, request: RollbackInput) -> None:
        refusal = self._rollback_refusal(request)
        if refusal:
            self._log(f"rollback by {request.actor} refused: {refusal}")
            self._record()
            return
        self._rollback = request

    @workflow.update(name="rollback")
    async def rollback_update(self, request: RollbackInput) -> str:
        self._rollback = request
        if not versions.decided_at_start():
            return f"rollback of {self._view.execution_id} requested"
        # The caller learns whether it runs now or waits for the resource (never accepted, then dropped).
        await workflow.wait_condition(lambda: self._rollback_waiting or self._view.status is not S.COMPLETED)
        if self._rollback_waiting:
            return (f"rollback of {self._view.execution_id} accepted: another execution is changing the "
                    "resource; the rollback runs as soon as that ends")
        return f"rollback of {self._view.execution_id} started"

    @rollback_update.validator
    def _validate_rollback(self, request: RollbackInput) -> None:
        refusal = self._rollback_refusal(request)
        if refusal:
            raise ApplicationError(refusal, type="Refused", non_retryable=True)

    @workflow.query(name="status")
    def status(self) -> ExecutionView:
        return self._view

    # ---- lease, bookkeeping ------------------------------------------------------------

    async def _acquire_lease(self) -> None:
        if not await self._try_acquire_lease():
            rec = self._request.recommendation
            raise _Rejected(
                S.REJECTED_BY_VALIDATION,
                f"resource {rec.resource_id} is busy: another execution is changing it", Refusal.BUSY,
            )

    async def _try_acquire_lease(self) -> bool:
        rec = self._request.recommendation
        try:
            self._lease = await workflow.start_child_workflow(
                ResourceLeaseWorkflow.run,
                LeaseInput(holder=self._view.execution_id),
                id=lease_id_for(rec.account_id, rec.region, rec.resource_id),
                static_summary=lease_summary(rec.resource_id, self._view.execution_id),
                parent_close_policy=ParentClosePolicy.TERMINATE,
                cancellation_type=ChildWorkflowCancellationType.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def _release_lease(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            await lease.signal(ResourceLeaseWorkflow.release)
            # Wait until the lease has really closed: a rollback right after COMPLETED
            # re-acquires it, and under load the old lease could still be open.
            if versions.uses(versions.AWAIT_LEASE_RELEASE):
                await lease

    def _step_input(self, assessment: Assessment | None) -> ActionStepInput:
        return ActionStepInput(
            execution_id=self._view.execution_id,
            recommendation=self._request.recommendation,
            observed=assessment.observed if assessment else Observation(),
        )

    def _transition(self, status: ExecutionStatus, message: str, reason: str | None = None) -> None:
        current = self._view.status
        if status is not current and not can_transition(current, status):
            raise ApplicationError(
                f"illegal transition {current.value} -> {status.value}", type="IllegalTransition",
                non_retryable=True,
            )
        now = workflow.now()
        self._view.status = status
        self._view.step = message
        self._view.progress_percent = progress_percent(status)
        if reason is not None:
            self._view.reason = reason
        if status in TERMINAL or status is S.COMPLETED:  # the change is done (or never happens)
            self._view.finished_at = now
        self._view.log.append(StepLogEntry(at=now, status=status, message=message))
        if (current is S.AWAITING_APPROVAL) != (status is S.AWAITING_APPROVAL) and status not in TERMINAL:
            self._tell_plan_waiting(status is S.AWAITING_APPROVAL)
        workflow.upsert_search_attributes([sa.EXECUTION_STATUS.value_set(status.value)])
        workflow.set_current_details(execution_details(self._view))  # user metadata: no command
        self._record()
        if status in TERMINAL or status is S.COMPLETED:
            self._notify_plan()

    def _tell_plan_waiting(self, waiting: bool) -> None:
        """A plan shows which of its items wait for a person (so `plan watch` can say that only
        people can move it); settling is told by `_notify_plan`."""
        parent = workflow.info().parent
        if self._request.plan_id is None or parent is None or not versions.decided_at_start():
            return
        handle = workflow.get_external_workflow_handle(parent.workflow_id)
        signal = ItemWaiting(execution_id=self._view.execution_id, waiting=waiting)
        self._records.append(asyncio.ensure_future(handle.signal("item_waiting", signal)))

    def _notify_plan(self) -> None:
        """Tell the plan this item settled: a completed change stays open for its rollback window."""
        parent = workflow.info().parent
        if self._request.plan_id is None or parent is None or self._plan_notified:
            return
        self._plan_notified = True
        settled = ItemSettled(
            execution_id=self._view.execution_id, status=self._view.status, reason=self._view.reason,
            refusal=self._view.refusal,
            actual_monthly_savings=self._view.actual_monthly_savings,
            observed=self._observed if self._view.dry_run else None,
        )
        handle = workflow.get_external_workflow_handle(parent.workflow_id)
        self._records.append(asyncio.ensure_future(handle.signal("item_settled", settled)))

    def _log(self, message: str) -> None:
        self._view.log.append(StepLogEntry(at=workflow.now(), status=self._view.status, message=message))
        self._view.updated_at = workflow.now()

    def _record(self) -> None:
        """Write the read model without waiting for it: a database outage must not stall AWS work."""
        self._view.sequence += 1
        self._view.updated_at = workflow.now()
        view = self._view.model_copy(deep=True)
        if versions.uses(versions.READ_MODEL_LOCAL_WRITES):
            self._records.append(asyncio.ensure_future(self._write_locally(view)))
        else:
            self._records.append(self._write_durably(view))

    async def _write_locally(self, view: ExecutionView) -> None:
        """One attempt as a local activity: a marker in the history, no activity task, no extra
        workflow task, and the view itself stays out of the history. If the store does not answer,
        the newest view goes the durable way, retried until it lands."""
        try:
            await workflow.execute_local_activity_method(
                RecordActivities.record_execution, view,
                schedule_to_close_timeout=LOCAL_RECORD_TIMEOUT, retry_policy=ONE_ATTEMPT,
            )
        except FailureError:  # ActivityError, or the ApplicationError/TimeoutError itself for a local one
            await self._write_durably(self._view.model_copy(deep=True))

    def _write_durably(self, view: ExecutionView) -> workflow.ActivityHandle[Any]:
        # On the records queue: a wedged database must never hold a slot that AWS work needs.
        queue = records_task_queue(workflow.info().task_queue) if versions.decided_at_start() else None
        return workflow.start_activity_method(
            RecordActivities.record_execution, view, task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=RECORD_RETRY,
        )

    async def _drain_records(self) -> None:
        pending, self._records = self._records, []
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

