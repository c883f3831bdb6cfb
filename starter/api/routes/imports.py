"""/api/v1/imports: an import or scan run now as an ImportWorkflow (the import id is its workflow id),
and its counts once it ends. Tenancy as everywhere: an import for a customer the token may not act for
is refused whole (403); another customer's import answers 404, like a missing one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import Field, ValidationError

from domain.base import StrictModel
from domain.imports import ACCOUNT_PATTERN, REGION_PATTERN, ImportInput, ImportPlan, ImportSource
from domain.recommendation import ID_PATTERN
from starter.api.auth import Principal
from starter.api.deps import OperatorDep, Services, ServicesDep, ViewerDep
from starter.api.errors import ApiError, responses
from starter.executions import NotFound
from starter.imports import Imports, ImportStatus

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])

Account = Annotated[str, Field(pattern=ACCOUNT_PATTERN)]
Region = Annotated[str, Field(pattern=REGION_PATTERN)]


class ImportBody(StrictModel):
    """What to import. A saved file is not offered here: the API does not read the worker's disk."""

    source: Literal["coh", "co", "ta", "scan"] = Field(description="Cost Optimization Hub, Compute Optimizer, "
                                                                    "Trusted Advisor, or Reclaim's own scanner.")
    customer_id: str = Field(pattern=ID_PATTERN)
    account_ids: list[Account] = Field(default_factory=list, max_length=100,
                                       description="Empty: the worker's credentials' own account.")
    regions: list[Region] = Field(default_factory=list, max_length=50)
    lookback_days: int | None = Field(default=None, ge=1, le=455, description="Scan only.")
    plan: ImportPlan | None = Field(default=None, description="Open a dry-run plan of the NEW recommendations.")

    def to_input(self, principal: Principal, svc: Services) -> ImportInput:
        """The workflow's input; 403 for a customer this token may not act for, 422 for what does not fit."""
        if not principal.sees(self.customer_id):
            raise ApiError(403, "forbidden", f"this token may not act for customer {self.customer_id}; "
                                             "nothing was imported")
        try:
            return ImportInput(source=ImportSource(self.source), customer_id=self.customer_id,
                               account_ids=self.account_ids, regions=self.regions, lookback_days=self.lookback_days,
                               requested_by=principal.subject, policy=svc.settings.policy(), plan=self.plan)
        except ValidationError as exc:
            raise ApiError(422, "invalid_request", [
                {"field": "body." + ".".join(str(p) for p in e["loc"]) if e["loc"] else "body",
                 "message": e["msg"]} for e in exc.errors()]) from None


class ImportAccepted(StrictModel):
    import_id: str = Field(description="GET /api/v1/imports/{import_id} answers its counts once it ends.")
    status: str = "RUNNING"


def imports(svc: Services) -> Imports:
    return Imports(svc.executions.client, svc.executions.task_queue)


@router.post("", status_code=202, response_model=ImportAccepted, responses=responses(401, 403, 422))
async def start_import(body: ImportBody, principal: OperatorDep, svc: ServicesDep) -> ImportAccepted:
    """Import (or scan) now, keeping the read model current, and optionally open a dry-run plan of the
    NEW recommendations. Answers at once; the counts come from GET /api/v1/imports/{import_id}."""
    return ImportAccepted(import_id=await imports(svc).start(body.to_input(principal, svc)))


@router.get("/{import_id}", response_model=ImportStatus, responses=responses(401, 403, 404))
async def get_import(import_id: Annotated[str, Path(pattern=ID_PATTERN)], principal: ViewerDep,
                     svc: ServicesDep) -> ImportStatus:
    """RUNNING, or how it ended: the counts (new, updated, unchanged, stale, held; unsupported by reason,
    invalid by field) and the plan id if one was opened, or why it failed."""
    try:
        found = await imports(svc).status(import_id)
    except NotFound:
        found = None
    if found is None or found.customer_id is None or not principal.sees(found.customer_id):
        raise ApiError(404, "not_found", f"no import {import_id}")
    return found
