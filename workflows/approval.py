"""The human gate of an execution: who may decide, the wait for a decision, and its record.

Signals and updates reach `decide` alike; an update's validator asks `refusal`
first, so a refused update never enters the history (the steering side records
it), while a refused signal is kept in the view with its reason. With approval
public keys in the policy, `refusal` also asks for Reclaim's signature over the
decision (domain/signing.py): a decision sent straight to Temporal is refused.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.execution import ApprovalInput, ApprovalRecord, Decision, ExecutionRequest, Refusal
    from domain.notifications import NotificationEvent, reminder_times
    from domain.policy import approval_refusal
    from domain.signing import signature_refusal
    from domain.status import ExecutionStatus
    from workflows import versions
    from workflows.ledger import Ended, Ledger

S = ExecutionStatus


class ApprovalGate:
    def __init__(self, ledger: Ledger, request: ExecutionRequest) -> None:
        self._ledger = ledger
        self._request = request
        self.decision: Decision | None = None

    async def wait(self) -> None:
        """Ask a person and wait; ends the execution when they reject it or nobody answers."""
        view, timeout = self._ledger.view, self._request.options.approval_timeout
        self._ledger.transition(S.AWAITING_APPROVAL, "waiting for a human: " + "; ".join(view.approval_reasons))
        reminders = reminder_times(timeout, self._request.options.approval_reminders) if versions.tells_ahead() else []
        waited = timedelta(0)
        for at in [*reminders, timeout]:
            try:
                await workflow.wait_condition(lambda: self.decision is not None, timeout=at - waited)
                break
            except TimeoutError:
                waited = at
                if at == timeout:
                    raise Ended(S.EXPIRED, f"no decision within {timeout}") from None
                self._ledger.announce(NotificationEvent.APPROVAL_REMINDER)
        if self.decision is Decision.REJECT:
            last = view.approvals[-1]
            raise Ended(S.REJECTED, f"rejected by {last.actor}: {last.comment}".rstrip(": "))
        self._ledger.log(f"approved by {view.approvals[-1].actor}")

    def accept_plan_approval(self) -> None:
        """The approved dry-run report covers this item: its approval is this execution's."""
        grant = self._request.plan_approval
        assert grant is not None
        refusal = approval_refusal(self._request.policy, grant.actor, grant.role, self._request.requested_by)
        if refusal:
            raise Ended(S.REJECTED_BY_VALIDATION, f"the plan's approval does not cover this item: {refusal}",
                        Refusal.NOT_COVERED)
        view = self._ledger.view
        view.approvals.append(ApprovalRecord(
            id=str(workflow.uuid4()), execution_id=view.execution_id, actor=grant.actor, role=grant.role,
            decision=Decision.APPROVE, comment=grant.comment, at=grant.at, accepted=True,
            via=f"plan {grant.plan_id}",
        ))
        self._ledger.log(f"approved by {grant.actor} with the dry run of plan {grant.plan_id}")

    def refusal(self, decision: Decision, attempt: ApprovalInput) -> str | None:
        view = self._ledger.view
        if self.decision is not None:  # decided, perhaps in this very workflow task
            taken = next((a for a in reversed(view.approvals) if a.accepted), None)
            verb = "approved" if self.decision is Decision.APPROVE else "rejected"
            return f"already {verb} by {taken.actor}" if taken else f"already {verb}"
        if view.status is not S.AWAITING_APPROVAL:
            return f"execution is {view.status.value}, not awaiting approval"
        # Only with keys in the policy (none in runs started before them: their replay is unchanged).
        unsigned = signature_refusal(self._request.policy.approval_public_keys, view.execution_id, decision.value,
                                     attempt, workflow.now())
        if unsigned:
            return unsigned
        return approval_refusal(
            self._request.policy, attempt.actor, attempt.role, self._request.requested_by,
            approve=decision is Decision.APPROVE,
        )

    def decide(self, decision: Decision, attempt: ApprovalInput, via: str) -> ApprovalRecord:
        refusal = self.refusal(decision, attempt)
        view = self._ledger.view
        record = ApprovalRecord(
            id=str(workflow.uuid4()), execution_id=view.execution_id, actor=attempt.actor, role=attempt.role,
            decision=decision, comment=attempt.comment, at=workflow.now(), accepted=refusal is None,
            refusal=refusal, via=via,
        )
        view.approvals.append(record)
        if refusal is None:
            self.decision = decision
            self._ledger.note(f"{decision.value} by {attempt.actor} via {via}")
        else:
            self._ledger.note(f"refused {decision.value} by {attempt.actor} via {via}: {refusal}")
        return record
