"""Typed steering of executions, shared by the CLI, the API, the demo and tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.accounts import AccountsFileError
from activities.actions.base import action_class
from activities.aws import AccountsLookup
from domain.accounts import AccountsFile
from domain.execution import (
    ApprovalInput,
    ApprovalRecord,
    Decision,
    ExecutionRequest,
    ExecutionView,
    RollbackInput,
    dry_run_id_for,
    execution_id_for,
    lease_id_for,
)
from domain.notifications import Acknowledgement
from domain.presentation import execution_summary
from domain.recommendation import Recommendation
from domain.status import TERMINAL, ExecutionStatus
from runtime.approval_key import ApprovalSigner
from starter.polling import poll
from store.repository import Store
from workflows.alarm import RollbackAlarmWorkflow, alarm_id
from workflows.execution import ExecutionWorkflow
from workflows.lease import ResourceLeaseWorkflow
from workflows.priority import for_execution

#: Where `--wait` stops: nothing more happens without a person (or the rollback window).
SETTLED = TERMINAL | {ExecutionStatus.COMPLETED, ExecutionStatus.AWAITING_APPROVAL}

#: How long a repeated dry run waits for the previous one, already PLANNED, to close.
FINISHING_GRACE_SECONDS = 30.0


class ReclaimError(Exception):
    """A user-facing refusal: one clear line, no traceback."""


class NotFound(ReclaimError):
    """No such execution (or none still running to receive the request)."""


class ResourceBusy(ReclaimError):
    """Another active execution holds the resource's lease."""


class Refused(ReclaimError):
    """The workflow's validator said no (wrong role, own request, wrong state)."""


class InvalidResourceId(ReclaimError):
    """The resource id does not have the form of its kind's resource type."""


class InvalidCursor(ReclaimError):
    """A page cursor that the read model did not issue."""


class AccountRefused(ReclaimError):
    """The accounts file refuses new executions there: disabled (its kill switch), not listed, or
    another customer's, region or kind."""


def admitted(accounts: AccountsLookup | None, request: ExecutionRequest) -> ExecutionRequest:
    """The request as the accounts file lets it start: refused (AccountRefused) or with the account's
    policy overrides applied to its policy. Here, at the edge: the workflow only reads its input."""
    file = accounts_now(accounts)
    if file is None:
        return request
    rec = request.recommendation
    refusal = file.refusal(rec)
    if refusal is not None:
        raise AccountRefused(refusal)
    return request.model_copy(update={"policy": file.policy_for(rec.account_id, request.policy)})


def accounts_now(accounts: AccountsLookup | None) -> AccountsFile | None:
    """The accounts file as it is now; a malformed one refuses (its problems, one line)."""
    try:
        return accounts() if accounts is not None else None
    except AccountsFileError as exc:
        raise ReclaimError(str(exc)) from None


class StaleRecommendation(ReclaimError):
    """Its source no longer returns it (a re-import or re-scan marked it stale): refused without force."""


def stale_refusal(rec_id: str, source: str, stale_at: datetime) -> StaleRecommendation:
    return StaleRecommendation(
        f"recommendation {rec_id} is stale: {source} no longer reported it at its last import or scan "
        f"({stale_at:%Y-%m-%d %H:%M} UTC); the resource may be gone or changed. Import or scan again to "
        "refresh it, or force it (--force; the API's \"force\": true)")


@dataclass(frozen=True)
class Started:
    execution_id: str
    created: bool


def check_recommendation(rec: Recommendation) -> None:
    """Unknown kinds and bad params are refused before anything starts."""
    try:
        kind = action_class(rec.kind)
    except LookupError as exc:
        raise ReclaimError(str(exc.args[0])) from None
    from activities.actions.base import resource_id_problem
    from activities.errors import Refused as ActionRefused

    problem = resource_id_problem(kind.resource_type, rec.resource_id)
    if problem:
        raise InvalidResourceId(problem)
    try:
        kind.parse_params(rec.params)
    except ActionRefused as exc:
        raise ReclaimError(str(exc)) from None


#: Opens the read model for one use: the CLI opens (and migrates) it only when a command needs it.
ReadModel = Callable[[], AbstractAsyncContextManager[Store]]


def kept_open(store: Store) -> ReadModel:
    """An open store as a `ReadModel` (the API's, the embedded stack's): used, never closed here."""
    return lambda: contextlib.nullcontext(store)


class Executions:
    """Steering over Temporal (a `starter.steering.Steering`).

    `read_model`: where refused approval attempts are recorded (labelled `via`: they never reach
    history), where executions are listed and recommendations kept; without one, refusals go
    unrecorded and listing is refused.
    """

    def __init__(self, client: Client, task_queue: str, read_model: ReadModel | None = None, *,
                 via: str = "update", accounts: AccountsLookup | None = None,
                 signer: ApprovalSigner | None = None) -> None:
        """`accounts`: the accounts file as it is now (`Settings.accounts()`); None: any account.
        `signer`: Reclaim's approval key (`Settings.approval_signer()`); every decision sent is
        signed with it, so runs whose policy carries its public key accept them."""
        self.client = client
        self.task_queue = task_queue
        self.read_model = read_model
        self.via = via
        self.accounts = accounts
        self.signer = signer

    def recording(self, store: Store, *, via: str) -> Executions:
        """The same steering, recording refusals in `store` labelled `via` (the API: "api")."""
        return Executions(self.client, self.task_queue, kept_open(store), via=via, accounts=self.accounts,
                          signer=self.signer)

    def _store(self) -> AbstractAsyncContextManager[Store]:
        if self.read_model is None:
            raise ReclaimError("no read model to answer from (no database configured here)")
        return self.read_model()

    async def save_recommendations(self, recs: list[Recommendation]) -> None:
        if self.read_model is not None:
            async with self.read_model() as store:
                await store.save_recommendations(recs)

    async def list_executions(
        self, *, customer_id: str | None = None, status: ExecutionStatus | None = None, limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[ExecutionView], str | None]:
        async with self._store() as store:
            try:
                found = await store.list_executions(customer_id=customer_id, status=status, limit=limit,
                                                    cursor=cursor)
            except ValueError as exc:  # a cursor that is not one of ours
                raise InvalidCursor(str(exc)) from None
        return list(found.executions), found.next_cursor

    def handle(self, execution_id: str) -> WorkflowHandle[ExecutionWorkflow, ExecutionView]:
        return self.client.get_workflow_handle_for(ExecutionWorkflow.run, execution_id)

    async def start(self, request: ExecutionRequest, *, force: bool = False) -> Started:
        """Start, or find the execution this recommendation already has. An account the accounts
        file refuses (disabled, say) refuses it, dry run or not; its overrides apply to the policy.
        A stale recommendation
        (the read model says its source no longer returns it) is refused unless `force`; a dry run,
        which changes nothing, is not."""
        check_recommendation(request.recommendation)
        request = admitted(self.accounts, request)
        dry_run = request.options.dry_run
        if not force and not dry_run:
            await self.refuse_stale(request.recommendation.id)
        if dry_run:  # one still running under the id of before `dryrun-` is the one this finds
            legacy = execution_id_for(request.recommendation.id, dry_run=True)
            if await self._exists(legacy) and not await self._dry_run_done(legacy):
                return Started(legacy, created=False)
        execution_id = dry_run_id_for(request.recommendation.id) if dry_run else execution_id_for(
            request.recommendation.id)
        if await self._exists(execution_id) and (not dry_run or not await self._dry_run_done(execution_id)):
            return Started(execution_id, created=False)  # a dry run may be repeated once finished
        rec = request.recommendation
        holder = await self.lease_holder(rec.account_id, rec.region, rec.resource_id)
        if holder is not None and holder != execution_id and not await self._let_go(holder, rec):
            raise ResourceBusy(f"resource {rec.resource_id} is busy: execution {holder} is changing it")
        try:
            await self.client.start_workflow(
                ExecutionWorkflow.run,
                request,
                id=execution_id,
                task_queue=self.task_queue,
                id_reuse_policy=(WorkflowIDReusePolicy.ALLOW_DUPLICATE if dry_run
                                 else WorkflowIDReusePolicy.REJECT_DUPLICATE),
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary=execution_summary(rec, dry_run),
                static_details=f"Requested by {request.requested_by}; recommendation {rec.id}.",
                priority=for_execution(rec.customer_id),
            )
        except WorkflowAlreadyStartedError:
            return Started(execution_id, created=False)
        return Started(execution_id, created=True)

    async def refuse_stale(self, rec_id: str) -> None:
        if self.read_model is None:
            return
        async with self.read_model() as store:
            state = await store.recommendation_state(rec_id)
        if state is not None and state.stale_at is not None:
            raise stale_refusal(rec_id, state.recommendation.source, state.stale_at)

    async def _let_go(self, holder: str, rec: Recommendation) -> bool:
        """Whether `holder` has finished and let go of the resource, waiting (bounded) for one that
        has settled but is still releasing its lease: a person who saw it settle may act at once."""

        async def verdict() -> bool | None:
            try:
                if (await self.status(holder)).status not in TERMINAL | {ExecutionStatus.COMPLETED}:
                    return False
            except (NotFound, RPCError, WorkflowQueryFailedError):
                pass  # the holder is gone or cannot answer: its lease goes with it
            if await self.lease_holder(rec.account_id, rec.region, rec.resource_id) != holder:
                return True
            return None  # settled, still letting go

        try:
            return bool(await poll(verdict, lambda answer: answer is not None, interval=0.1,
                                   timeout=FINISHING_GRACE_SECONDS))
        except TimeoutError:
            return False

    async def _exists(self, execution_id: str) -> bool:
        try:
            await self.client.get_workflow_handle(execution_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _dry_run_done(self, execution_id: str) -> bool:
        """Closed, or PLANNED and only releasing its lease: a user who saw PLANNED may plan again at once."""
        if await self._closed(execution_id):
            return True
        try:
            if (await self.status(execution_id)).status not in TERMINAL:
                return False
            await asyncio.wait_for(self.handle(execution_id).result(), timeout=FINISHING_GRACE_SECONDS)
        except TimeoutError:
            return False
        except (WorkflowFailureError, RPCError):  # failed or gone: either way it no longer holds the id
            return await self._closed(execution_id)
        return True

    async def _closed(self, execution_id: str) -> bool:
        description = await self.handle(execution_id).describe()
        return description.status != WorkflowExecutionStatus.RUNNING

    async def lease_holder(self, account_id: str, region: str, resource_id: str) -> str | None:
        handle = self.client.get_workflow_handle_for(
            ResourceLeaseWorkflow.run, lease_id_for(account_id, region, resource_id)
        )
        try:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                return None
            return await handle.query(ResourceLeaseWorkflow.holder)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def status(self, execution_id: str) -> ExecutionView:
        try:
            return await self.handle(execution_id).query(ExecutionWorkflow.status)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no execution {execution_id}") from None
            raise

    async def wait(
        self, execution_id: str, until: frozenset[ExecutionStatus] = SETTLED, timeout: float = 600.0
    ) -> ExecutionView:
        """Poll the status query until the execution settles (a completed one stays open for rollback)."""
        polls = 0

        async def look() -> tuple[ExecutionView, bool]:
            nonlocal polls
            view = await self.status(execution_id)
            if view.status in until:
                return view, True
            polls += 1
            if polls % 10 == 0 and await self._closed(execution_id):
                return await self.status(execution_id), True  # failed or terminated: nothing more will happen
            return view, False

        view, _ = await poll(
            look, lambda answer: answer[1], interval=0.05, backoff=1.5, max_interval=0.5, timeout=timeout,
            too_long=lambda answer: ReclaimError(
                f"{execution_id} is still {answer[0].status.value} after {timeout:.0f} s"),
        )
        return view

    async def decide(self, execution_id: str, approve: bool, attempt: ApprovalInput) -> ApprovalRecord:
        update = ExecutionWorkflow.approve_update if approve else ExecutionWorkflow.reject_update
        if self.signer is not None:
            decision = Decision.APPROVE if approve else Decision.REJECT
            attempt = self.signer.sign(execution_id, decision.value, attempt)
        try:
            return await self.handle(execution_id).execute_update(update, attempt)
        except WorkflowUpdateFailedError as exc:
            refusal = _cause_message(exc)
        except RPCError as exc:
            raise _rpc_error(execution_id, exc) from None
        await self._record_refusal(execution_id, approve, attempt, refusal)
        raise Refused(refusal)

    async def acknowledge(self, execution_id: str, ack: Acknowledgement) -> Acknowledgement:
        """Silence the repeated alarm of a failed undo (`workflows/alarm.py`): someone has it."""
        handle = self.client.get_workflow_handle_for(RollbackAlarmWorkflow.run, alarm_id(execution_id))
        try:
            return await handle.execute_update(RollbackAlarmWorkflow.acknowledge_update, ack)
        except WorkflowUpdateFailedError as exc:
            raise Refused(_cause_message(exc)) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND or "workflow execution already completed" in str(exc):
                raise NotFound(f"no alarm is ringing for {execution_id}") from None
            raise _rpc_error(execution_id, exc) from None

    async def _record_refusal(self, execution_id: str, approve: bool, attempt: ApprovalInput, refusal: str) -> None:
        """A refused update never reaches history (its validator said no): the audit trail keeps it."""
        if self.read_model is None:
            return
        async with self.read_model() as store:
            await store.record_approval(ApprovalRecord(
                id=str(uuid.uuid4()), execution_id=execution_id, actor=attempt.actor, role=attempt.role,
                decision=Decision.APPROVE if approve else Decision.REJECT, comment=attempt.comment,
                at=datetime.now(UTC), accepted=False, refusal=refusal, via=self.via,
            ))

    async def rollback(self, execution_id: str, request: RollbackInput) -> str:
        try:
            # temporalio's overloads do not match an async update handler's coroutine type.
            answer: str = await self.handle(execution_id).execute_update(
                ExecutionWorkflow.rollback_update, request)  # type: ignore[arg-type]
            return answer
        except WorkflowUpdateFailedError as exc:
            raise Refused(_cause_message(exc)) from None
        except RPCError as exc:
            raise _rpc_error(execution_id, exc) from None

    async def cancel(self, execution_id: str) -> None:
        view = await self.status(execution_id)
        if view.status in TERMINAL:
            raise Refused(f"execution is {view.status.value}; nothing to cancel")
        try:
            await self.handle(execution_id).cancel()
        except RPCError as exc:
            raise _rpc_error(execution_id, exc) from None


def _cause_message(exc: WorkflowUpdateFailedError) -> str:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or exc)


def _rpc_error(execution_id: str, exc: RPCError) -> ReclaimError:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return NotFound(f"no running execution {execution_id}")
    return ReclaimError(exc.message)
