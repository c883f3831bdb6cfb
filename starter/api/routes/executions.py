"""/api/v1/executions: launch, watch, approve, reject, roll back and cancel executions.

Another customer's execution answers 404, exactly like a missing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from pydantic import Field, model_validator
from temporalio.service import RPCError, RPCStatusCode

from activities.actions.base import action_class
from domain.base import StrictModel
from domain.execution import (
    ApprovalInput,
    ApprovalRecord,
    ExecutionOptions,
    ExecutionRequest,
    ExecutionView,
    RollbackInput,
)
from domain.notifications import Acknowledgement
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus
from starter.api.auth import Principal
from starter.api.deps import ApproverDep, OperatorDep, ServicesDep, ViewerDep
from starter.api.errors import ApiError, responses
from starter.executions import (
    AccountRefused,
    InvalidResourceId,
    NotFound,
    ReclaimError,
    Refused,
    ResourceBusy,
    check_recommendation,
    stale_refusal,
)

router = APIRouter(prefix="/api/v1/executions", tags=["executions"])


class ExecuteBody(StrictModel):
    recommendation_id: str | None = Field(default=None, max_length=128)
    recommendation: Recommendation | None = None
    dry_run: bool = False
    auto_approve: bool = True
    force: bool = Field(default=False, description="Execute even a stale recommendation (one a re-import or "
                        "re-scan of its source no longer returned).")

    @model_validator(mode="after")
    def _exactly_one(self) -> ExecuteBody:
        if (self.recommendation_id is None) == (self.recommendation is None):
            raise ValueError("give exactly one of recommendation_id or recommendation")
        return self


class Started(StrictModel):
    execution_id: str
    status: ExecutionStatus
    started_at: datetime
    created: bool


class ExecutionDetail(ExecutionView):
    web_ui_url: str


class ExecutionList(StrictModel):
    total: int
    executions: list[ExecutionDetail]
    next_cursor: str | None


class CommentBody(StrictModel):
    comment: str = Field(default="", max_length=2000)


class ReasonBody(StrictModel):
    reason: str = Field(default="", max_length=2000)


def _detail(view: ExecutionView, ui: str, namespace: str) -> ExecutionDetail:
    link = f"{ui.rstrip('/')}/namespaces/{quote(namespace)}/workflows/{quote(view.execution_id)}"
    return ExecutionDetail(**view.model_dump(), web_ui_url=link)


async def _find(svc: Any, execution_id: str) -> ExecutionView | None:
    """The execution, or None when there is none; an outage is raised (503), never read as 404."""
    view: ExecutionView | None = await svc.store.get_execution(execution_id)
    if view is None:
        try:
            view = await svc.executions.status(execution_id)
        except NotFound:
            view = None
        except RPCError as exc:
            if exc.status not in _NO_SUCH_ID:
                raise
            view = None  # an id Temporal refuses outright names no execution
    return view


#: Temporal's answers that mean "no such execution"; anything else is an outage.
_NO_SUCH_ID = frozenset({RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT})


async def _visible(svc: Any, principal: Principal, execution_id: str) -> ExecutionView:
    """The execution if this caller may see it; 404 otherwise (no hint that it exists)."""
    view = await _find(svc, execution_id)
    if view is None or not principal.sees(view.customer_id):
        raise ApiError(404, "not_found", f"no execution {execution_id}")
    return view


def _check(rec: Recommendation) -> None:
    """Unknown kinds and bad params: 422 naming the field, before anything is stored or started."""
    try:
        action_class(rec.kind)
    except LookupError as exc:
        raise ApiError(422, "invalid_request",
                       [{"field": "body.recommendation.kind", "message": str(exc.args[0])}]) from None
    try:
        check_recommendation(rec)
    except InvalidResourceId as exc:
        raise ApiError(422, "invalid_request",
                       [{"field": "body.recommendation.resource_id", "message": str(exc)}]) from None
    except ReclaimError as exc:
        raise ApiError(422, "invalid_request", [{"field": "body.recommendation.params", "message": str(exc)}]) from None


def _id_taken(rec: Recommendation) -> ApiError:
    # Recommendation (and so execution) ids are global: another customer's must stay untouched and unread.
    return ApiError(409, "conflict", f"recommendation id {rec.id} is already in use; choose another id")


@router.post("/execute", status_code=202, response_model=Started,
             responses={200: {"model": Started, "description": "The execution this recommendation already has"},
                        **responses(401, 403, 404, 409, 422)})
async def execute(body: ExecuteBody, principal: OperatorDep, svc: ServicesDep, response: Response) -> Started:
    inline = body.recommendation is not None
    if body.recommendation is not None:
        rec = body.recommendation
        if not principal.sees(rec.customer_id):
            raise ApiError(403, "forbidden", f"this token may not act for customer {rec.customer_id}")
        _check(rec)
        stored = await svc.store.get_recommendation(rec.id)
        if stored is not None and stored.customer_id != rec.customer_id:
            raise _id_taken(rec)
    else:
        found = await svc.store.get_recommendation(body.recommendation_id or "")
        if found is None or not principal.sees(found.customer_id):
            raise ApiError(404, "not_found", f"no recommendation {body.recommendation_id}")
        rec = found
    if not body.force and not body.dry_run:
        state = await svc.store.recommendation_state(rec.id)
        if state is not None and state.stale_at is not None and state.recommendation.customer_id == rec.customer_id:
            raise ApiError(409, "stale_recommendation",
                           str(stale_refusal(rec.id, state.recommendation.source, state.stale_at)))
    request = ExecutionRequest(
        recommendation=rec, requested_by=principal.subject, policy=svc.settings.policy(),
        options=ExecutionOptions(dry_run=body.dry_run, auto_approve=body.auto_approve),
    )
    try:
        started = await svc.executions.start(request, force=True)  # staleness answered above, as a 409
    except ResourceBusy as exc:
        raise ApiError(409, "resource_busy", await _busy_detail(svc, principal, rec, exc)) from None
    except AccountRefused as exc:
        raise ApiError(409, "account_refused", str(exc)) from None
    except ReclaimError as exc:
        field = "body.recommendation" if inline else "body.recommendation_id"
        raise ApiError(422, "invalid_request", [{"field": field, "message": str(exc)}]) from None
    view = await svc.executions.status(started.execution_id)
    if view.customer_id != rec.customer_id:  # the id already belongs to another customer's execution
        raise _id_taken(rec)
    if inline:  # stored only once accepted: a refused request leaves no trace
        await svc.store.save_recommendations([rec])
    if not started.created:
        response.status_code = 200
    return Started(execution_id=started.execution_id, status=view.status, started_at=view.started_at,
                   created=started.created)


async def _busy_detail(svc: Any, principal: Principal, rec: Recommendation, exc: ResourceBusy) -> str:
    """Name the holding execution only to a caller who may see it."""
    holder = await svc.executions.lease_holder(rec.account_id, rec.region, rec.resource_id)
    view = None if holder is None else await _find(svc, holder)
    if view is not None and principal.sees(view.customer_id):
        return str(exc)
    return f"resource {rec.resource_id} is busy: another execution is changing it"


@router.get("/{execution_id}", response_model=ExecutionDetail, responses=responses(401, 403, 404, 422))
async def get_execution(execution_id: str, principal: ViewerDep, svc: ServicesDep) -> ExecutionDetail:
    view = await _visible(svc, principal, execution_id)
    return _detail(view, svc.settings.web_ui_url, svc.settings.temporal_namespace)


@router.get("", response_model=ExecutionList, responses=responses(401, 403, 422))
async def list_executions(
    principal: ViewerDep,
    svc: ServicesDep,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    status: ExecutionStatus | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ExecutionList:
    allowed = principal.customer_filter()
    if customer_id is not None and not principal.sees(customer_id):
        return ExecutionList(total=0, executions=[], next_cursor=None)
    customers = {customer_id} if customer_id is not None else allowed
    try:
        page = await svc.store.list_executions(
            customer_ids=customers, status=status, kind=kind, limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise ApiError(422, "invalid_request", [{"field": "query.cursor", "message": str(exc)}]) from None
    ui, ns = svc.settings.web_ui_url, svc.settings.temporal_namespace
    return ExecutionList(total=page.total, executions=[_detail(v, ui, ns) for v in page.executions],
                         next_cursor=page.next_cursor)


async def _decide(svc: Any, principal: Principal, execution_id: str, approve: bool, comment: str) -> ApprovalRecord:
    await _visible(svc, principal, execution_id)
    attempt = ApprovalInput(actor=principal.subject, role=principal.role, comment=comment)
    try:
        record: ApprovalRecord = await svc.steering.decide(execution_id, approve, attempt)
        return record
    except Refused as exc:  # already in the audit trail
        raise ApiError(409, "refused", str(exc)) from None
    except NotFound as exc:
        raise ApiError(409, "not_running", str(exc)) from None


@router.post("/{execution_id}/approve", response_model=ApprovalRecord, responses=responses(401, 403, 404, 409, 422))
async def approve(execution_id: str, body: CommentBody, principal: ApproverDep, svc: ServicesDep) -> ApprovalRecord:
    return await _decide(svc, principal, execution_id, True, body.comment)


@router.post("/{execution_id}/reject", response_model=ApprovalRecord, responses=responses(401, 403, 404, 409, 422))
async def reject(execution_id: str, body: ReasonBody, principal: ApproverDep, svc: ServicesDep) -> ApprovalRecord:
    return await _decide(svc, principal, execution_id, False, body.reason)


class Accepted(StrictModel):
    execution_id: str
    message: str


@router.post("/{execution_id}/rollback", response_model=Accepted, status_code=202, responses=responses(401, 403, 404, 409, 422))
async def rollback(execution_id: str, body: ReasonBody, principal: OperatorDep, svc: ServicesDep) -> Accepted:
    await _visible(svc, principal, execution_id)
    try:
        message = await svc.executions.rollback(
            execution_id, RollbackInput(actor=principal.subject, reason=body.reason)
        )
    except (Refused, NotFound) as exc:
        raise ApiError(409, "refused", str(exc)) from None
    return Accepted(execution_id=execution_id, message=message)


@router.post("/{execution_id}/cancel", response_model=Accepted, status_code=202, responses=responses(401, 403, 404, 409, 422))
async def cancel(execution_id: str, principal: OperatorDep, svc: ServicesDep) -> Accepted:
    view = await _visible(svc, principal, execution_id)
    if view.status not in _CANCELLABLE:
        raise ApiError(409, "refused", f"execution is {view.status.value}; nothing to cancel")
    try:
        await svc.executions.cancel(execution_id)
    except (ReclaimError, NotFound) as exc:
        raise ApiError(409, "refused", str(exc)) from None
    if view.status is ExecutionStatus.COMPLETED:
        message = "cancellation requested; the rollback window closes, the change stays (use rollback to undo it)"
    else:
        message = "cancellation requested; changes are undone"
    return Accepted(execution_id=execution_id, message=message)


@router.post("/{execution_id}/acknowledge", response_model=Acknowledgement,
             responses=responses(401, 403, 404, 409, 422))
async def acknowledge(execution_id: str, body: CommentBody, principal: OperatorDep, svc: ServicesDep) -> Acknowledgement:
    """Silence the repeated alarm of a failed undo (ROLLBACK_FAILED): someone has it."""
    await _visible(svc, principal, execution_id)
    try:
        return await svc.executions.acknowledge(
            execution_id, Acknowledgement(actor=principal.subject, role=principal.role, comment=body.comment))
    except (Refused, NotFound) as exc:
        raise ApiError(409, "refused", str(exc)) from None


_CANCELLABLE = frozenset({
    ExecutionStatus.PENDING, ExecutionStatus.VALIDATING, ExecutionStatus.AWAITING_APPROVAL,
    ExecutionStatus.SCHEDULED, ExecutionStatus.BACKING_UP, ExecutionStatus.APPLYING,
    ExecutionStatus.VERIFYING, ExecutionStatus.COMPLETED,
})
