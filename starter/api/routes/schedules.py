"""/api/v1/schedules: imports and scans on a Temporal Schedule (`reclaim schedule ...` over HTTP).
Operators and above create, pause, resume, trigger and delete; viewers list. A schedule of a customer
the token may not see answers 404, like a missing one; creating one for such a customer is 403."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import Field

from domain.base import StrictModel
from starter.api.auth import Principal
from starter.api.deps import OperatorDep, Services, ServicesDep, ViewerDep
from starter.api.errors import ApiError, responses
from starter.api.routes.imports import ImportBody, imports
from starter.executions import NotFound, ReclaimError
from starter.imports import NAME_PATTERN, Conflict, ScheduleView

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])

Name = Annotated[str, Path(pattern=NAME_PATTERN)]


class ScheduleBody(ImportBody):
    name: str = Field(pattern=NAME_PATTERN, description="The schedule's id is `import-schedule-<name>`.")
    cron: str = Field(min_length=1, max_length=200, examples=["0 6 * * MON"],
                      description='When, in UTC: a cron expression ("0 6 * * MON") or "@every 6h".')


class NoteBody(StrictModel):
    note: str = Field(default="", max_length=500)


class Triggered(StrictModel):
    name: str
    import_id: str = Field(description="GET /api/v1/imports/{import_id} follows it.")


async def _visible(svc: Services, principal: Principal, name: str) -> ScheduleView:
    try:
        view = await imports(svc).describe_schedule(name)
    except NotFound:
        view = None
    if view is None or not principal.sees(view.input.customer_id):
        raise ApiError(404, "not_found", f"no schedule {name}")
    return view


@router.post("", status_code=201, response_model=ScheduleView, responses=responses(401, 403, 409, 422))
async def create_schedule(body: ScheduleBody, principal: OperatorDep, svc: ServicesDep) -> ScheduleView:
    """A Temporal Schedule (in the Web UI's Schedules page) whose every run is an ImportWorkflow."""
    req = body.to_input(principal, svc)
    try:
        return await imports(svc).create_schedule(body.name, req, body.cron)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except ReclaimError as exc:
        raise ApiError(422, "invalid_request", [{"field": "body.cron", "message": str(exc)}]) from None


@router.get("", response_model=list[ScheduleView], responses=responses(401, 403))
async def list_schedules(principal: ViewerDep, svc: ServicesDep) -> list[ScheduleView]:
    """The import schedules of the token's customers (a new one may take a moment to appear)."""
    return await imports(svc).list_schedules(principal.customer_filter())


@router.get("/{name}", response_model=ScheduleView, responses=responses(401, 403, 404))
async def get_schedule(name: Name, principal: ViewerDep, svc: ServicesDep) -> ScheduleView:
    return await _visible(svc, principal, name)


@router.post("/{name}/pause", response_model=ScheduleView, responses=responses(401, 403, 404, 422))
async def pause_schedule(name: Name, body: NoteBody, principal: OperatorDep, svc: ServicesDep) -> ScheduleView:
    await _visible(svc, principal, name)
    return await imports(svc).pause_schedule(name, True, body.note)


@router.post("/{name}/resume", response_model=ScheduleView, responses=responses(401, 403, 404, 422))
async def resume_schedule(name: Name, body: NoteBody, principal: OperatorDep, svc: ServicesDep) -> ScheduleView:
    await _visible(svc, principal, name)
    return await imports(svc).pause_schedule(name, False, body.note)


@router.post("/{name}/trigger", status_code=202, response_model=Triggered, responses=responses(401, 403, 404))
async def trigger_schedule(name: Name, principal: OperatorDep, svc: ServicesDep) -> Triggered:
    """Run its import now (after the running one, if one runs)."""
    view = await _visible(svc, principal, name)
    steering = imports(svc)
    await steering.trigger_schedule(name)
    return Triggered(name=name, import_id=await steering.triggered_import(name, [*view.recent, *view.running]))


@router.delete("/{name}", status_code=204, response_class=Response, responses=responses(401, 403, 404))
async def delete_schedule(name: Name, principal: OperatorDep, svc: ServicesDep) -> Response:
    """Delete it; imports it started, and their plans, go on."""
    await _visible(svc, principal, name)
    await imports(svc).delete_schedule(name)
    return Response(status_code=204)
