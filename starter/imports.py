"""Typed steering of imports (ImportWorkflow) and their Temporal Schedules, shared by the CLI, the API
and tests.

An import's id is its workflow id (`import-<hex>`, or `<schedule's workflow id>-<time>` for one a
schedule started); its customer is the workflow's `CustomerId` search attribute, so a closed import's
tenant is known without a worker. A schedule's id is `import-schedule-<name>`; its action starts
ImportWorkflow with the schedule's `ImportInput`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.base import StrictModel
from domain.imports import ImportInput, ImportResult
from starter.executions import NotFound, ReclaimError
from starter.polling import poll
from workflows import search_attributes as sa
from workflows.imports import ImportWorkflow

SCHEDULE_PREFIX = "import-schedule-"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: Imports a schedule starts are these, plus the time Temporal appends.
SCHEDULED_PREFIX = "import-"


class ImportStatus(StrictModel):
    """An import as `GET /api/v1/imports/{id}` and `reclaim schedule trigger --wait` read it."""

    import_id: str
    customer_id: str | None = None
    status: str = Field(description="RUNNING, COMPLETED, FAILED, TERMINATED, CANCELED, TIMED_OUT.")
    result: ImportResult | None = Field(default=None, description="The counts, once COMPLETED.")
    error: str | None = Field(default=None, description="Why it failed, once FAILED.")
    started_at: datetime | None = None
    closed_at: datetime | None = None


class ScheduleView(StrictModel):
    """A schedule as `reclaim schedule list` and `GET /api/v1/schedules` show it."""

    name: str
    schedule_id: str
    cron: str = Field(description="As given to `schedule create` (Temporal keeps it as calendars).")
    paused: bool = False
    note: str = ""
    input: ImportInput
    next_runs: list[datetime] = Field(default_factory=list)
    recent: list[str] = Field(default_factory=list, description="The latest imports it started, oldest first.")
    running: list[str] = Field(default_factory=list)


def customer_attributes(customer_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(sa.CUSTOMER_ID, customer_id)])


def schedule_id(name: str) -> str:
    return SCHEDULE_PREFIX + name


class Imports:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    # -- one import ---------------------------------------------------------------------------

    async def start(self, req: ImportInput, import_id: str | None = None) -> str:
        import_id = import_id or f"import-{uuid.uuid4().hex[:16]}"
        await self.client.start_workflow(
            ImportWorkflow.run, req, id=import_id, task_queue=self.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=customer_attributes(req.customer_id))
        return import_id

    async def status(self, import_id: str) -> ImportStatus:
        handle = self.client.get_workflow_handle_for(ImportWorkflow.run, import_id)
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise NotFound(f"no import {import_id}") from None
            raise
        if described.workflow_type != "ImportWorkflow":
            raise NotFound(f"no import {import_id}")
        status = described.status or WorkflowExecutionStatus.RUNNING
        found = ImportStatus(import_id=import_id, customer_id=described.typed_search_attributes.get(sa.CUSTOMER_ID),
                             status=status.name, started_at=described.start_time, closed_at=described.close_time)
        if status is WorkflowExecutionStatus.COMPLETED:
            found.result = await handle.result()
        elif status is WorkflowExecutionStatus.FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as exc:
                found.error = failure_message(exc)
        return found

    async def wait(self, import_id: str, timeout: float = 3600.0) -> ImportStatus:
        return await poll(lambda: self.status(import_id), lambda s: s.status != "RUNNING", interval=0.1,
                          backoff=1.5, max_interval=2.0, timeout=timeout, too_long=lambda s: ReclaimError(
                              f"import {import_id} still runs after {timeout:.0f} s"))

    # -- schedules -----------------------------------------------------------------------------

    def schedule(self, name: str) -> ScheduleHandle:
        return self.client.get_schedule_handle(schedule_id(name))

    async def create_schedule(self, name: str, req: ImportInput, cron: str, *, note: str = "",
                              now: bool = False) -> ScheduleView:
        """A Temporal Schedule whose action starts ImportWorkflow; `now`: its first import at once too.
        An import still running when the next is due makes that one skip (overlap SKIP)."""
        req = req.model_copy(update={"schedule": name})
        action = ScheduleActionStartWorkflow(
            ImportWorkflow.run, req, id=SCHEDULED_PREFIX + name, task_queue=self.task_queue,
            typed_search_attributes=customer_attributes(req.customer_id))
        schedule = Schedule(action=action, spec=ScheduleSpec(cron_expressions=[cron]),
                            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP,
                                                  catchup_window=timedelta(hours=1)),
                            state=ScheduleState(note=note or f"reclaim schedule create {name}"))
        try:
            await self.client.create_schedule(schedule_id(name), schedule, trigger_immediately=now, memo={"cron": cron},
                                              search_attributes=customer_attributes(req.customer_id))
        except ScheduleAlreadyRunningError:
            raise Conflict(f"schedule {name} already exists (delete it first)") from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise ReclaimError(f"--cron {cron!r}: {exc.message}") from None
            raise
        return await self.describe_schedule(name)

    async def describe_schedule(self, name: str) -> ScheduleView:
        try:
            described = await self.schedule(name).describe()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise NotFound(f"no schedule {name}") from None
            raise
        action = described.schedule.action
        if not isinstance(action, ScheduleActionStartWorkflow) or action.workflow != "ImportWorkflow":
            raise NotFound(f"no schedule {name}")
        [req] = await self.client.data_converter.decode(action.args, [ImportInput])
        state = described.schedule.state
        cron = await described.memo_value("cron", default=None, type_hint=str)
        return ScheduleView(
            name=name, schedule_id=described.id, input=req, paused=state.paused, note=state.note or "",
            cron=cron or "",
            next_runs=list(described.info.next_action_times[:3]),
            recent=[action.workflow_id for action in (a.action for a in described.info.recent_actions)
                    if isinstance(action, ScheduleActionExecutionStartWorkflow)],
            running=[a.workflow_id for a in described.info.running_actions
                     if isinstance(a, ScheduleActionExecutionStartWorkflow)])

    async def list_schedules(self, customers: frozenset[str] | None = None) -> list[ScheduleView]:
        """Every import schedule (of these customers), by name. Temporal lists from its visibility
        store: a schedule created a moment ago may take a moment to appear."""
        views = []
        async for listed in await self.client.list_schedules():
            if not listed.id.startswith(SCHEDULE_PREFIX):
                continue
            try:
                view = await self.describe_schedule(listed.id.removeprefix(SCHEDULE_PREFIX))
            except NotFound:  # deleted meanwhile
                continue
            if customers is None or view.input.customer_id in customers:
                views.append(view)
        return sorted(views, key=lambda v: v.name)

    async def pause_schedule(self, name: str, paused: bool, note: str = "") -> ScheduleView:
        await self.describe_schedule(name)  # NotFound for a missing one
        handle = self.schedule(name)
        if paused:
            await handle.pause(note=note or "paused with reclaim schedule pause")
        else:
            await handle.unpause(note=note or "resumed with reclaim schedule resume")
        return await self.describe_schedule(name)

    async def trigger_schedule(self, name: str) -> datetime:
        """Start an import now (after the running one, if any: overlap BUFFER_ONE); returns when asked."""
        await self.describe_schedule(name)
        asked = datetime.now(UTC)
        await self.schedule(name).trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
        return asked

    async def triggered_import(self, name: str, before: list[str], timeout: float = 60.0) -> str:
        """The id of the first import the schedule started that is not among `before`."""
        async def started() -> list[str]:
            view = await self.describe_schedule(name)
            return [i for i in [*view.recent, *view.running] if i not in before]

        found = await poll(started, bool, interval=0.1, backoff=1.5, max_interval=1.0, timeout=timeout,
                           too_long=lambda _: ReclaimError(f"schedule {name} started nothing in {timeout:.0f} s"))
        return found[0]

    async def delete_schedule(self, name: str) -> None:
        await self.describe_schedule(name)
        await self.schedule(name).delete()


def failure_message(exc: BaseException) -> str:
    """The innermost application error's message (the activity's one line), else the error itself."""
    found: BaseException | None = exc
    message = str(exc)
    while found is not None:
        if isinstance(found, ApplicationError):
            message = found.message
        found = found.__cause__ or getattr(found, "cause", None)
    return message


class Conflict(ReclaimError):
    """Already exists."""
