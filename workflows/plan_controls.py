"""A plan's steering by people: pause, resume, abort, and the decision on a dry run's report.

Signals and updates reach the same methods; an update's validator asks the
refusal first, so a refused update never enters the history, while a refused
signal is kept among the plan's events with its reason.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.plans import ApprovedSet, PlanActivities
    from domain.execution import PlanApproval
    from domain.notifications import NotificationEvent
    from domain.plan import ItemState, PlanControl, PlanCursor, PlanDecision, PlanInput, PlanStatus, WaveState
    from domain.policy import Role, approval_refusal
    from domain.signing import plan_decision, signature_refusal
    from domain.status import ExecutionStatus
    from workflows.options import RECORD_RETRY, STORE_TIMEOUT
    from workflows.plan_ledger import PlanLedger
    from workflows.plan_telling import PlanTelling

CONTROL_ROLES = (Role.OPERATOR, Role.APPROVER, Role.ADMIN)
_ENDED = (PlanStatus.COMPLETED, PlanStatus.COMPLETED_WITH_FAILURES, PlanStatus.ABORTED, PlanStatus.FAILED)


class PlanControls:
    def __init__(self, ledger: PlanLedger, plan: PlanInput, telling: PlanTelling) -> None:
        self._ledger = ledger
        self._telling = telling
        self._policy = plan.policy
        self.paused = ledger.view.status is PlanStatus.PAUSED
        self.paused_at = workflow.now()
        self.abort: PlanControl | None = None
        self.decision: tuple[bool, PlanDecision] | None = None

    def pause(self, reason: str) -> None:
        self.paused, self.paused_at = True, workflow.now()
        self._ledger.set_status(PlanStatus.PAUSED, reason)

    def aborted_by_reclaim(self, reason: str) -> None:
        self.abort = PlanControl(actor="reclaim", role=Role.ADMIN, reason=reason)

    def refusal(self, control: PlanControl, action: str) -> str | None:
        view = self._ledger.view
        if control.role not in CONTROL_ROLES:
            return f"{control.actor} has role {control.role.value}; {action} needs operator, approver or admin"
        if view.status in _ENDED or self.abort is not None:
            return f"plan is {view.status.value}" + (" and aborting" if self.abort is not None else "")
        if action == "pause" and (self.paused or view.status is not PlanStatus.RUNNING):
            return f"plan is {view.status.value}; only a RUNNING plan can be paused"
        if action == "resume" and not self.paused:
            return f"plan is {view.status.value}, not paused"
        return None

    def control(self, action: str, control: PlanControl, via: str) -> str:
        refusal = self.refusal(control, action)
        if refusal:
            self._ledger.event(f"{action} by {control.actor} via {via} refused: {refusal}")
            return refusal
        suffix = f": {control.reason}" if control.reason else ""
        if action == "pause":
            self.pause(f"paused by {control.actor}{suffix}")
        elif action == "resume":
            self.paused = False
            self._ledger.view.failures = 0  # the threshold counts failures since the last resume
            self._ledger.set_status(PlanStatus.RUNNING, f"resumed by {control.actor}{suffix}")
        else:
            self.abort = control if control.reason else control.model_copy(
                update={"reason": f"aborted by {control.actor}"})
            self._ledger.event(f"abort requested by {control.actor} via {via}{suffix}")
        return f"plan {self._ledger.view.plan_id}: {action} accepted"

    def decision_refusal(self, decision: PlanDecision, approve: bool) -> str | None:
        view = self._ledger.view
        if view.status is not PlanStatus.AWAITING_APPROVAL or self.decision is not None:
            return f"plan is {view.status.value}; only a dry-run plan awaiting approval can be decided"
        if approve and decision.items is not None and not decision.items:
            return "an approval naming items must name at least one"
        unsigned = signature_refusal(self._policy.approval_public_keys, workflow.info().workflow_id,
                                     plan_decision(approve), decision, workflow.now())
        if unsigned:
            return unsigned
        return approval_refusal(self._policy, decision.actor, decision.role, view.requested_by, approve=approve)

    def decide(self, decision: PlanDecision, approve: bool, via: str) -> str:
        verb = "approve" if approve else "reject"
        refusal = self.decision_refusal(decision, approve)
        if refusal:
            self._ledger.event(f"{verb} by {decision.actor} via {via} refused: {refusal}")
            return refusal
        self.decision = (approve, decision)
        message = f"{verb}d by {decision.actor} via {via}" + (f": {decision.comment}" if decision.comment else "")
        if approve:  # the answer to the approver already shows the plan moving on
            self._ledger.set_status(PlanStatus.RUNNING, message)
        else:
            self._ledger.event(message)
        return f"plan {self._ledger.view.plan_id}: {verb}d"

    async def approved(self) -> bool:
        """After the dry run: wait for the report's approval; on approval, switch to the approved set."""
        ledger, view = self._ledger, self._ledger.view
        planned = view.counts.get(ExecutionStatus.PLANNED.value, 0)
        if planned == 0:
            view.reason = "no item passed the dry run: nothing to approve"
            return False
        ledger.set_status(PlanStatus.AWAITING_APPROVAL, f"dry run done: {planned} of {view.total} items can run; "
                                                        "waiting for the report's approval")
        await ledger.flush_landed()
        self._telling.tell(NotificationEvent.PLAN_AWAITING_APPROVAL)
        timeout = view.rate.approval_timeout
        try:
            await workflow.wait_condition(lambda: self.decision is not None or self.abort is not None,
                                          timeout=timeout)
        except TimeoutError:
            self.aborted_by_reclaim(f"no approval within {timeout}")
            return False
        if self.abort is not None or self.decision is None:
            return False
        approve, decision = self.decision
        if not approve:
            comment = f": {decision.comment}" if decision.comment else ""
            self.abort = PlanControl(actor=decision.actor, role=decision.role,
                                     reason=f"dry run rejected by {decision.actor}{comment}")
            return False
        per_wave: dict[int, int] = await workflow.execute_activity_method(
            PlanActivities.approve_plan_items,
            ApprovedSet(plan_id=view.plan_id, recommendation_ids=decision.items),
            start_to_close_timeout=STORE_TIMEOUT, retry_policy=RECORD_RETRY, task_queue=ledger.store_queue,
        )
        approved = sum(per_wave.values())
        view.approval = PlanApproval(plan_id=view.plan_id, actor=decision.actor, role=decision.role,
                                     comment=decision.comment, at=workflow.now())
        view.phase = "execute"
        view.not_approved = view.total - approved
        view.total = approved
        view.counts = {ItemState.NOT_APPROVED.value: view.not_approved} if view.not_approved else {}
        view.failures = 0
        for wave in view.waves:
            wave.size, wave.state, wave.counts = per_wave.get(wave.index, 0), WaveState.PENDING, {}
            wave.started_at = wave.finished_at = None
        ledger.cursor = PlanCursor(wave=0, offset=0)
        ledger.event(f"running the {approved} approved items")
        return True
