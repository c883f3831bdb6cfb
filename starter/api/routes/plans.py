"""/api/v1/plans: run many recommendations as one plan, steer it, fetch its report.

A plan is visible to a caller who may see every customer in it; otherwise it
answers 404, exactly like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import Field

from domain.base import StrictModel
from domain.manual import ManualDecision
from domain.plan import PlanControl, PlanDecision, PlanSpec, PlanView
from domain.plan_report import PlanReport, render_markdown
from domain.recommendation import ID_PATTERN
from starter.api.auth import Principal
from starter.api.deps import ApproverDep, OperatorDep, ServicesDep, ViewerDep
from starter.api.errors import ApiError, responses
from starter.executions import NotFound, ReclaimError, Refused
from starter.plans import Plans

router = APIRouter(prefix="/api/v1/plans", tags=["plans"])


class ApproveBody(StrictModel):
    comment: str = Field(default="", max_length=2000)
    items: list[str] | None = Field(default=None, max_length=10_000,
                                    description="Only these recommendation ids; default: every planned item.")


class ReasonBody(StrictModel):
    reason: str = Field(default="", max_length=2000)


class AnswerBody(StrictModel):
    comment: str = Field(default="", max_length=2000)
    evidence: str = Field(default="", max_length=4000, description="A link or text that shows it was done.")


class Accepted(StrictModel):
    plan_id: str
    message: str


def _plans(svc: Any) -> Plans:
    return Plans(svc.executions.client, svc.executions.task_queue, svc.store, accounts=svc.executions.accounts,
                 signer=svc.executions.signer)


async def _visible(svc: Any, principal: Principal, plan_id: str) -> PlanView:
    try:
        view = await _plans(svc).progress(plan_id)
    except (NotFound, ReclaimError):
        view = None
    except Exception:  # an id Temporal refuses outright
        view = None
    if view is None or not all(principal.sees(c) for c in view.customer_ids):
        raise ApiError(404, "not_found", f"no plan {plan_id}")
    return view


@router.post("", status_code=202, response_model=PlanView,
             responses={200: {"model": PlanView, "description": "The plan with this id, already running"},
                        **responses(401, 403, 404, 409, 422)})
async def create_plan(spec: PlanSpec, principal: OperatorDep, svc: ServicesDep, response: Response) -> PlanView:
    plans = _plans(svc)
    for rec in spec.recommendations:
        if not principal.sees(rec.customer_id):
            raise ApiError(403, "forbidden", f"this token may not act for customer {rec.customer_id}")
        stored = await svc.store.get_recommendation(rec.id)
        if stored is not None and stored.customer_id != rec.customer_id:
            raise ApiError(409, "conflict", f"recommendation id {rec.id} is already in use; choose another id")
    for index, rec_id in enumerate(spec.recommendation_ids):
        found = await svc.store.get_recommendation(rec_id)
        if found is None or not principal.sees(found.customer_id):
            raise ApiError(422, "invalid_request", [{"field": f"body.recommendation_ids.{index}",
                                                     "message": f"no recommendation {rec_id}"}])
    if spec.id is not None:
        existing = await svc.store.plans.get(spec.id)
        if existing is not None:
            if not all(principal.sees(c) for c in existing.customer_ids):
                raise ApiError(409, "conflict", f"plan id {spec.id} is already in use; choose another id")
            response.status_code = 200
            return await _visible(svc, principal, spec.id)
    try:
        recs = await plans.resolve(spec)
        return await plans.submit(spec, requested_by=principal.subject, policy=svc.settings.policy(),
                                  recommendations=recs)
    except ReclaimError as exc:
        raise ApiError(422, "invalid_request", [{"field": "body", "message": str(exc)}]) from None


@router.get("", response_model=list[PlanView], responses=responses(401, 403, 422))
async def list_plans(principal: ViewerDep, svc: ServicesDep,
                     limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[PlanView]:
    views: list[PlanView] = await svc.store.plans.list_plans(customer_ids=principal.customer_filter(), limit=limit)
    return views


@router.get("/{plan_id}", response_model=PlanView, responses=responses(401, 403, 404, 422))
async def get_plan(plan_id: str, principal: ViewerDep, svc: ServicesDep) -> PlanView:
    return await _visible(svc, principal, plan_id)


@router.get("/{plan_id}/report", response_model=PlanReport,
            responses={200: {"content": {"application/json": {}, "text/markdown": {}},
                             "description": "The report, JSON or (format=md) Markdown"},
                       **responses(401, 403, 404, 422)})
async def get_report(plan_id: str, principal: ViewerDep, svc: ServicesDep,
                     format: Literal["json", "md"] = "json") -> Any:
    await _visible(svc, principal, plan_id)
    report = await _plans(svc).report(plan_id)
    if format == "md":
        return PlainTextResponse(render_markdown(report), media_type="text/markdown")
    return report


async def _steer(svc: Any, principal: Principal, plan_id: str, call: Any) -> Accepted:
    await _visible(svc, principal, plan_id)
    try:
        message: str = await call(_plans(svc))
    except Refused as exc:
        raise ApiError(409, "refused", str(exc)) from None
    except NotFound as exc:
        raise ApiError(409, "not_running", str(exc)) from None
    except ReclaimError as exc:
        raise ApiError(409, "refused", str(exc)) from None
    return Accepted(plan_id=plan_id, message=message)


@router.post("/{plan_id}/approve", response_model=Accepted, responses=responses(401, 403, 404, 409, 422))
async def approve(plan_id: str, body: ApproveBody, principal: ApproverDep, svc: ServicesDep) -> Accepted:
    decision = PlanDecision(actor=principal.subject, role=principal.role, comment=body.comment, items=body.items)
    return await _steer(svc, principal, plan_id, lambda plans: plans.decide(plan_id, True, decision))


@router.post("/{plan_id}/reject", response_model=Accepted, responses=responses(401, 403, 404, 409, 422))
async def reject(plan_id: str, body: ReasonBody, principal: ApproverDep, svc: ServicesDep) -> Accepted:
    decision = PlanDecision(actor=principal.subject, role=principal.role, comment=body.reason)
    return await _steer(svc, principal, plan_id, lambda plans: plans.decide(plan_id, False, decision))


def _control(action: str) -> Any:
    async def route(plan_id: str, body: ReasonBody, principal: OperatorDep, svc: ServicesDep) -> Accepted:
        control = PlanControl(actor=principal.subject, role=principal.role, reason=body.reason)
        return await _steer(svc, principal, plan_id, lambda plans: plans.control(plan_id, action, control))

    route.__name__ = f"{action}_plan"
    return route


for _action in ("pause", "resume", "abort"):
    router.post(f"/{{plan_id}}/{_action}", response_model=Accepted,
                responses=responses(401, 403, 404, 409, 422))(_control(_action))


def _answer(confirm: bool) -> Any:
    async def route(plan_id: str, item_id: Annotated[str, Path(pattern=ID_PATTERN)], body: AnswerBody,
                    principal: OperatorDep,
                    svc: ServicesDep) -> Accepted:
        """A waiting manual item: confirmed or failed by the token's subject (its role, or one above it)."""
        decision = ManualDecision(item=item_id, actor=principal.subject, role=principal.role,
                                  comment=body.comment, evidence=body.evidence)
        return await _steer(svc, principal, plan_id, lambda plans: plans.answer(plan_id, confirm, decision))

    route.__name__ = f"{'confirm' if confirm else 'fail'}_manual_item"
    return route


for _confirm in (True, False):
    router.post(f"/{{plan_id}}/items/{{item_id}}/{'confirm' if _confirm else 'fail'}", response_model=Accepted,
                responses=responses(401, 403, 404, 409, 422))(_answer(_confirm))
