"""A person's approve or reject from Slack or the approval page, through the API's own path.

The same checks as `POST /api/v1/executions/{id}/approve|reject`, in the same order: the execution
must be one this person may see (tenant), their role must be approver or admin, and then the
execution's `approve` / `reject` update decides (its validator: the role again, no self-approval,
still awaiting approval); a refused update is recorded in the approvals audit trail with `via`.
A plan's waiting manual item is confirmed or failed the way `POST /api/v1/plans/{id}/items/{item}/
confirm|fail` does it: a plan this person may see, the role operator or above, then the plan's
`confirm` / `fail` update (its validator: the item's role, the item waiting).
Here nothing is an HTTP error: every outcome is a sentence a person reads where they clicked.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.execution import ApprovalInput, ExecutionView
from domain.manual import ManualDecision
from domain.plan import PlanDecision, PlanView
from domain.policy import Role
from starter.api.auth import Principal
from starter.api.deps import Services
from starter.api.routes.executions import _find  # the read model first, Temporal second; an outage raises
from starter.executions import NotFound, ReclaimError, Refused
from starter.plans import Plans


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    message: str
    view: ExecutionView | None = None


def _self_approval(principal: Principal, view: ExecutionView) -> bool:
    return principal.subject.strip().lower() == view.requested_by.strip().lower()


async def decide_as(svc: Services, principal: Principal, execution_id: str, approve: bool, comment: str,
                    *, via: str) -> Outcome:
    verb = "approve" if approve else "reject"
    view = await _find(svc, execution_id)
    if view is None:
        return Outcome(False, f"there is no execution {execution_id}")
    if not principal.sees(view.customer_id):
        return Outcome(False, f"{principal.subject} may not decide for customer {view.customer_id}")
    if not principal.at_least(Role.APPROVER):
        return Outcome(False, f"{principal.subject} has the role {principal.role.value}; to {verb} a change "
                              "needs the role approver or admin", view)
    attempt = ApprovalInput(actor=principal.subject, role=principal.role, comment=comment)
    try:
        await svc.executions.recording(svc.store, via=via).decide(execution_id, approve, attempt)
    except Refused as exc:
        if approve and _self_approval(principal, view):
            return Outcome(False, "you requested this change, so you cannot approve it: another approver must", view)
        return Outcome(False, str(exc), view)
    except NotFound:
        return Outcome(False, f"execution {execution_id} is no longer running", view)
    done = "approved" if approve else "rejected"
    return Outcome(True, f"{done} by {principal.subject}" + (f": {comment}" if comment else ""), view)


def _plans(svc: Services) -> Plans:
    return Plans(svc.executions.client, svc.executions.task_queue, svc.store, accounts=svc.executions.accounts,
                 signer=svc.executions.signer)


async def visible_plan(svc: Services, principal: Principal, plan_id: str) -> PlanView | None:
    """The plan if this person may see it (every one of its customers), else None, as the API's 404."""
    try:
        view = await _plans(svc).progress(plan_id)
    except ReclaimError:
        return None
    return view if all(principal.sees(c) for c in view.customer_ids) else None


async def decide_plan_as(svc: Services, principal: Principal, plan_id: str, approve: bool, comment: str) -> Outcome:
    """Approve (every planned item) or reject a plan's dry run, as `POST /api/v1/plans/{id}/approve|reject`."""
    verb = "approve" if approve else "reject"
    view = await visible_plan(svc, principal, plan_id)
    if view is None:
        return Outcome(False, f"there is no plan {plan_id} that {principal.subject} may see")
    if not principal.at_least(Role.APPROVER):
        return Outcome(False, f"{principal.subject} has the role {principal.role.value}; to {verb} a plan "
                              "needs the role approver or admin")
    decision = PlanDecision(actor=principal.subject, role=principal.role, comment=comment)
    try:
        message = await _plans(svc).decide(plan_id, approve, decision)
    except ReclaimError as exc:
        if approve and principal.subject.strip().lower() == view.requested_by.strip().lower():
            return Outcome(False, "you requested this plan, so you cannot approve it: another approver must")
        return Outcome(False, str(exc))
    return Outcome(True, f"plan {plan_id}: {message}")


async def answer_manual_as(svc: Services, principal: Principal, plan_id: str, item_id: str, confirm: bool,
                           comment: str, evidence: str) -> Outcome:
    """Confirm or fail a plan's waiting manual item, as `POST /api/v1/plans/{id}/items/{item}/confirm|fail`."""
    verb = "confirm" if confirm else "fail"
    view = await visible_plan(svc, principal, plan_id)
    if view is None:
        return Outcome(False, f"there is no plan {plan_id} that {principal.subject} may see")
    step = next((m for m in view.manual if m.id == item_id), None)
    if step is None:
        return Outcome(False, f"plan {plan_id} has no manual step {item_id}")
    if not principal.at_least(Role.OPERATOR):
        return Outcome(False, f"{principal.subject} has the role {principal.role.value}; to {verb} manual step "
                              f"{item_id} needs the role {step.role.value} or above")
    decision = ManualDecision(item=item_id, actor=principal.subject, role=principal.role, comment=comment,
                              evidence=evidence)
    try:
        await _plans(svc).answer(plan_id, confirm, decision)
    except NotFound:
        return Outcome(False, f"plan {plan_id} is no longer running")
    except ReclaimError as exc:  # Refused among them: the plan's validator says why
        return Outcome(False, str(exc))
    done = "confirmed" if confirm else "failed"
    return Outcome(True, f"manual step {item_id} {done} by {principal.subject}" + (f": {comment}" if comment else ""))
