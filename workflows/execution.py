"""ExecutionWorkflow: the whole life of one change to one resource (DESIGN.md, "One execution").

Read top to bottom, `run` and `_execute` are the lifecycle: validate, score,
approve (automatically or by a person), wait for the window, change, keep the
rollback window. Everything that touches AWS or the database is an activity;
the parts live beside this module: `approval` (the human gate), `change`
(backup, apply, verify, compensation), `rollback` (the window after
COMPLETED), `lease` (the resource's mutex), `ledger` and `observers` (the
status, its log and who hears of it), `options` (retries and deadlines).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.execution import ExecutionActivities
    from activities.records import RecordActivities
    from activities.windows import WindowActivities
    from domain.execution import (
        ActionStepInput,
        ApprovalInput,
        ApprovalRecord,
        Assessment,
        Decision,
        ExecutionRequest,
        ExecutionView,
        LastChange,
        Observation,
        PermissionReport,
        Refusal,
        ResourceRef,
        RollbackInput,
        ValidateInput,
    )
    from domain.notifications import NotificationEvent
    from domain.policy import (
        approval_requirement,
        assess_risk,
        cooldown_refusal,
        protection,
        warns_owners,
        with_floors,
    )
    from domain.sources import recommender_risk_floors
    from domain.status import TERMINAL, ExecutionStatus, can_transition
    from domain.windows import ChangeScope, WindowVerdict
    from workflows import search_attributes as sa
    from workflows import versions
    from workflows.approval import ApprovalGate
    from workflows.change import Change
    from workflows.lease import LeaseHandle
    from workflows.ledger import Ended, Ledger
    from workflows.observers import observers_for
    from workflows.options import READ_DEADLINE, READ_RETRY
    from workflows.outcomes import closing_failure, describe_error, refuse_update
    from workflows.rollback import RollbackWindow

S = ExecutionStatus


@workflow.defn(name="ExecutionWorkflow")
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, request: ExecutionRequest) -> None:
        rec = request.recommendation
        now = workflow.now()
        self._request = request
        view = ExecutionView(
            execution_id=workflow.info().workflow_id, recommendation_id=rec.id, customer_id=rec.customer_id,
            account_id=rec.account_id, region=rec.region, kind=rec.kind, resource_id=rec.resource_id,
            requested_by=request.requested_by, status=S.PENDING, step="submitted", progress_percent=0,
            dry_run=request.options.dry_run, estimated_monthly_savings=rec.estimated_monthly_savings,
            started_at=now, updated_at=now,
        )
        self._ledger = Ledger(view, observers_for(request))
        self._view = view
        self._lease = LeaseHandle(rec.account_id, rec.region, rec.resource_id, view.execution_id)
        self._approval = ApprovalGate(self._ledger, request)
        self._change = Change(self._ledger, request, self._lease)
        self._rollback = RollbackWindow(self._ledger, request, self._lease, self._change)
        self._owners_warned = False

    # ---- run ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: ExecutionRequest) -> ExecutionView:
        rec = request.recommendation
        versions.decide_at_start()
        workflow.upsert_search_attributes([
            sa.CUSTOMER_ID.value_set(rec.customer_id), sa.ACCOUNT_ID.value_set(rec.account_id),
            sa.RESOURCE_ID.value_set(rec.resource_id), sa.ACTION_KIND.value_set(rec.kind),
        ])
        closing = versions.decided_at_start()
        cancelled = False
        try:
            await self._execute()
            if self._view.status is S.COMPLETED:
                await self._rollback.run(self._step_input(None))
        except Ended as end:
            if closing and end.status is S.PLANNED:
                # A dry run's PLANNED is the signal to run it for real (a plan does so at once):
                # the resource is free by then. A person's decision shows at once instead; the
                # client waits for a settled holder's lease (Executions.start).
                await self._lease.release()
            self._view.refusal = end.refusal
            self._ledger.transition(end.status, end.reason, reason=end.reason)
        except (Exception, asyncio.CancelledError) as err:  # never an eviction
            if is_cancelled_exception(err):
                cancelled = True
                if self._view.status not in (S.CANCELLED, S.COMPLETED) and can_transition(
                    self._view.status, S.CANCELLED
                ):
                    self._ledger.transition(S.CANCELLED, "cancelled before any change", reason="cancelled")
            elif closing:
                self._close_on_error(err)
            else:
                raise
        # Not in a `finally`: a worker evicting this workflow from its cache (a BaseException
        # that is not ours to handle) must not run commands. A failed workflow's lease dies
        # with it (parent close policy).
        await self._lease.release()
        await self._ledger.drain()
        if closing:
            failure = closing_failure(self._view, rollback_requested=self._rollback.requested is not None)
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
            self._ledger.note(f"backup clean-up failed, backups kept: {why}")
            return
        if self._view.status in TERMINAL:
            return
        self._ledger.transition(S.FAILED, f"failed before any change: {why}", reason=why)

    async def _execute(self) -> None:
        self._ledger.transition(S.VALIDATING, "checking the live resource")
        await self._acquire_lease()
        assessment = await self._validate()
        if self._patched_after_local_activity(versions.COOLDOWN):
            await self._check_cooldown()
        opts = self._request.options
        auto_approved = self._auto_approved(assessment)

        if opts.dry_run:
            report: PermissionReport = await workflow.execute_activity_method(
                ExecutionActivities.check_permissions, self._step_input(assessment),
                start_to_close_timeout=timedelta(minutes=2), schedule_to_close_timeout=READ_DEADLINE,
                retry_policy=READ_RETRY,
            )
            report.plan = assessment.plan
            self._view.permission_report = report
            self._view.observed = assessment.observed
            if not report.allowed:
                raise Ended(S.REJECTED_BY_VALIDATION, "no permission for: " + ", ".join(report.denied))
            raise Ended(S.PLANNED, "dry run: permissions checked, nothing changed")

        approved_by_human = False
        if not auto_approved and self._request.plan_approval is not None:
            self._approval.accept_plan_approval()
            approved_by_human = True
        elif not auto_approved:
            await self._approval.wait()
            approved_by_human = True
            # Hours may have passed: look again before touching anything.
            assessment = await self._validate(again=True)

        if opts.not_before is not None and opts.not_before > workflow.now():
            self._ledger.transition(S.SCHEDULED, f"waiting for the maintenance window at {opts.not_before.isoformat()}")
            if versions.tells_ahead() and warns_owners(assessment.traits) and not self._owners_warned:
                await self._warn_owners(opts.not_before - opts.owner_warning_lead)
            await workflow.sleep(opts.not_before - workflow.now())
            assessment = await self._validate(again=True)
            # The resource may have become riskier while waiting (tagged production, say):
            # an auto-approval given before the wait does not cover it.
            if (self._patched_after_local_activity(versions.POLICY_AFTER_MAINTENANCE_WAIT)
                    and not approved_by_human
                    and not self._auto_approved(assessment)):
                await self._approval.wait()
                # That decision covers the window wait after it too (before this generation a
                # closed window asked again, and each later look passed at once on it).
                approved_by_human = versions.times_launches()
                assessment = await self._validate(again=True)

        if versions.tells_ahead():
            assessment = await self._within_window(assessment, approved_by_human)
        await self._change.run(self._step_input(assessment), assessment)

    async def _within_window(self, assessment: Assessment, approved_by_human: bool) -> Assessment:
        """Wait in SCHEDULED until the change fits a covering window outside every freeze
        (`domain/windows.py`, asked of the worker's windows file); look again at the opening,
        and ask a person if the resource has become riskier than its auto-approval covered."""
        while True:
            verdict = await self._ask_window(assessment)
            if verdict.open:
                return assessment
            if verdict.start is None:
                raise Ended(S.REJECTED_BY_VALIDATION, verdict.reason, Refusal.NO_WINDOW)
            self._ledger.transition(S.SCHEDULED, f"waiting for its change window: {verdict.reason}")
            if warns_owners(assessment.traits) and not self._owners_warned:
                await self._warn_owners(verdict.start - self._request.options.owner_warning_lead)
            if verdict.start > workflow.now():
                await workflow.sleep(verdict.start - workflow.now())
            assessment = await self._validate(again=True)
            if not approved_by_human and not self._auto_approved(assessment):
                await self._approval.wait()
                approved_by_human = True
                assessment = await self._validate(again=True)

    async def _ask_window(self, assessment: Assessment) -> WindowVerdict:
        rec, traits = self._request.recommendation, assessment.traits
        verdict: WindowVerdict = await workflow.execute_local_activity_method(
            WindowActivities.ask,
            ChangeScope(customer_id=rec.customer_id, account_id=rec.account_id, region=rec.region, kind=rec.kind,
                        tags=dict(assessment.observed.tags), now=workflow.now(),
                        needs=traits.expected_duration if traits else timedelta(minutes=15)),
            start_to_close_timeout=timedelta(seconds=30), schedule_to_close_timeout=READ_DEADLINE,
            retry_policy=READ_RETRY,
        )
        return verdict

    async def _warn_owners(self, at: datetime) -> None:
        """Owners hear of a destructive change before it happens: at the lead time before the
        window, or at once when the window is nearer than that."""
        self._owners_warned = True
        if at > workflow.now():
            await workflow.sleep(at - workflow.now())
        self._ledger.log("owners warned of the change at the window")
        self._ledger.announce(NotificationEvent.OWNER_WARNING)

    @staticmethod
    def _patched_after_local_activity(patch_id: str) -> bool:
        if versions.decided_at_start():
            return True
        return versions.legacy_patched(patch_id, implied_by=versions.READ_MODEL_LOCAL_WRITES)

    async def _acquire_lease(self) -> None:
        if not await self._lease.try_acquire():
            raise Ended(S.REJECTED_BY_VALIDATION,
                        f"resource {self._view.resource_id} is busy: another execution is changing it", Refusal.BUSY)

    async def _check_cooldown(self) -> None:
        policy, rec = self._request.policy, self._request.recommendation
        if policy.cooldown_days <= 0:
            return
        last: LastChange | None = await workflow.execute_local_activity_method(
            RecordActivities.last_change,
            ResourceRef(account_id=rec.account_id, region=rec.region, resource_id=rec.resource_id,
                        exclude_execution_id=self._view.execution_id),
            start_to_close_timeout=timedelta(seconds=30), schedule_to_close_timeout=READ_DEADLINE,
            retry_policy=READ_RETRY,
        )
        refusal = cooldown_refusal(policy, last.at if last else None, workflow.now())
        if refusal:
            raise Ended(S.REJECTED_BY_VALIDATION, f"{refusal} (execution {last.execution_id if last else '?'})",
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
        if versions.tells_ahead():
            risk = with_floors(risk, recommender_risk_floors(rec))
        if risk.level != self._view.risk:
            workflow.upsert_search_attributes([sa.RISK_LEVEL.value_set(risk.level.value)])
        self._view.risk, self._view.risk_reasons = risk.level, risk.reasons
        requirement = approval_requirement(
            policy, assessment.traits, risk, savings, tags, auto_approve_requested=opts.auto_approve,
        )
        self._view.approval_reasons = [*requirement.reasons, *([savings_note] if savings_note else [])]
        return requirement.auto_approved

    async def _validate(self, again: bool = False) -> Assessment:
        # The state validated is no older than the change's start, or than the end of the wait it
        # validates again after (answers the worker read since may be taken: activities/gateway).
        fresh_since = workflow.now() if again else workflow.info().workflow_start_time
        assessment: Assessment = await workflow.execute_local_activity_method(
            ExecutionActivities.validate,
            ValidateInput(execution_id=self._view.execution_id, recommendation=self._request.recommendation,
                          expected=self._request.expected, read_ahead=self._request.read_ahead,
                          fresh_since=fresh_since),
            start_to_close_timeout=timedelta(seconds=60), schedule_to_close_timeout=READ_DEADLINE,
            retry_policy=READ_RETRY,
        )
        self._ledger.observed, self._ledger.plan = assessment.observed, assessment.plan
        prefix = "changed while waiting: " if again else ""
        if not assessment.valid:
            raise Ended(S.REJECTED_BY_VALIDATION, prefix + (assessment.reason or "invalid"), Refusal.CHANGED)
        protected = protection(self._request.policy, assessment.observed.tags)
        if protected:
            kind, why = protected
            raise Ended(S.REJECTED_BY_VALIDATION, prefix + why, Refusal(kind))
        self._ledger.log(f"validated: {'; '.join(assessment.plan) or 'ok'}")
        return assessment

    def _step_input(self, assessment: Assessment | None) -> ActionStepInput:
        return ActionStepInput(
            execution_id=self._view.execution_id, recommendation=self._request.recommendation,
            observed=assessment.observed if assessment else Observation(),
        )

    # ---- steering: signals, updates, the status query -----------------------------------

    @workflow.signal(name="approve")
    def approve_signal(self, attempt: ApprovalInput) -> None:
        self._approval.decide(Decision.APPROVE, attempt, "signal")

    @workflow.signal(name="reject")
    def reject_signal(self, attempt: ApprovalInput) -> None:
        self._approval.decide(Decision.REJECT, attempt, "signal")

    @workflow.update(name="approve")
    def approve_update(self, attempt: ApprovalInput) -> ApprovalRecord:
        return self._approval.decide(Decision.APPROVE, attempt, "update")

    @approve_update.validator
    def _validate_approve(self, attempt: ApprovalInput) -> None:
        refuse_update(self._approval.refusal(Decision.APPROVE, attempt))

    @workflow.update(name="reject")
    def reject_update(self, attempt: ApprovalInput) -> ApprovalRecord:
        return self._approval.decide(Decision.REJECT, attempt, "update")

    @reject_update.validator
    def _validate_reject(self, attempt: ApprovalInput) -> None:
        refuse_update(self._approval.refusal(Decision.REJECT, attempt))

    @workflow.signal(name="rollback")
    def rollback_signal(self, request: RollbackInput) -> None:
        self._rollback.ask(request)

    @workflow.update(name="rollback")
    async def rollback_update(self, request: RollbackInput) -> str:
        return await self._rollback.ask_and_answer(request)

    @rollback_update.validator
    def _validate_rollback(self, request: RollbackInput) -> None:
        refuse_update(self._rollback.refusal(request))

    @workflow.query(name="status")
    def status(self) -> ExecutionView:
        return self._view

