"""Typed steering of plans, shared by the CLI, the API and tests.

Submitting a plan stores its recommendations and items first (the workflow
reads them from the store page by page), then starts PlanWorkflow.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.aws import AccountsLookup
from domain.accounts import AccountsFile
from domain.manual import ManualDecision, ManualProgress, ManualStep
from domain.plan import (
    PLAN_TERMINAL,
    PlanControl,
    PlanDecision,
    PlanError,
    PlanInput,
    PlanSpec,
    PlanStatus,
    PlanView,
    WaveProgress,
    build_waves,
    plan_workflow_id,
)
from domain.plan_report import PlanReport, build_report
from domain.policy import Policy
from domain.recommendation import Recommendation
from domain.signing import manual_decision, plan_decision
from runtime.approval_key import ApprovalSigner
from starter.executions import (
    AccountRefused,
    NotFound,
    ReclaimError,
    Refused,
    _cause_message,
    accounts_now,
    check_recommendation,
    stale_refusal,
)
from starter.polling import poll
from store.plans import PlanExists
from store.repository import Store
from workflows.plan import PlanWorkflow
from workflows.priority import for_plan

#: Where `wait` stops by default: the plan ended, or a person has to act.
PLAN_SETTLED = PLAN_TERMINAL | {PlanStatus.AWAITING_APPROVAL, PlanStatus.PAUSED}
#: A live answer needs a worker; without one within this, the stored view answers.
QUERY_TIMEOUT = timedelta(seconds=5)


def account_policies(accounts: AccountsFile | None, policy: Policy, recs: list[Recommendation]) -> dict[str, Policy]:
    """Each account of the plan whose overrides change `policy`, with its own policy: a plan item
    runs under its account's policy, as a direct execution does (applied at submit, in the input,
    so the history shows what was applied)."""
    if accounts is None:
        return {}
    return {account: own for account in sorted({r.account_id for r in recs})
            if (own := accounts.policy_for(account, policy)) != policy}


class Plans:
    def __init__(self, client: Client, task_queue: str, store: Store, *, accounts: AccountsLookup | None = None,
                 signer: ApprovalSigner | None = None) -> None:
        """`signer`: Reclaim's approval key; decisions and manual answers sent are signed with it."""
        self.client = client
        self.task_queue = task_queue
        self.store = store
        self.accounts = accounts
        self.signer = signer

    def handle(self, plan_id: str) -> WorkflowHandle[PlanWorkflow, PlanView]:
        return self.client.get_workflow_handle_for(PlanWorkflow.run, plan_workflow_id(plan_id))

    async def resolve(self, spec: PlanSpec) -> list[Recommendation]:
        """The plan's recommendations: inline ones, then imported ones by id; unknown ones are refused."""
        recs = list(spec.recommendations)
        for rec_id in spec.recommendation_ids:
            found = await self.store.recommendation_state(rec_id)
            if found is None:
                raise ReclaimError(f"recommendation {rec_id} is not imported (POST it or name it inline)")
            if found.stale_at is not None:  # a plan's execute phase follows its dry run: refused here, whole
                raise stale_refusal(rec_id, found.recommendation.source, found.stale_at)
            recs.append(found.recommendation)
        for rec in recs:
            try:
                check_recommendation(rec)
            except ReclaimError as exc:
                raise ReclaimError(f"recommendation {rec.id}: {exc}") from None
        return recs

    async def submit(
        self, spec: PlanSpec, *, requested_by: str, policy: Policy | None = None,
        recommendations: list[Recommendation] | None = None, history_limit: int | None = None,
    ) -> PlanView:
        """Store the plan and start it; the same plan id submitted again finds the running plan."""
        recs = recommendations if recommendations is not None else await self.resolve(spec)
        accounts = accounts_now(self.accounts)
        refused = [f"{rec.id}: {why}" for rec in recs if accounts and (why := accounts.refusal(rec))]
        if refused:  # refused whole, before anything is stored or started
            raise AccountRefused(f"{len(refused)} of the plan's items are refused by the accounts file: "
                                 + "; ".join(refused[:5]) + ("; ..." if len(refused) > 5 else ""))
        try:
            waves, grouped = build_waves(spec, recs)
        except PlanError as exc:
            raise ReclaimError(str(exc)) from None
        plan_id = spec.id or f"{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:10]}"
        now = datetime.now(UTC)
        view = PlanView(
            plan_id=plan_id, name=spec.name, customer_ids=sorted({r.customer_id for r in recs}),
            requested_by=requested_by, phase="dry_run" if spec.dry_run else "execute", dry_run=spec.dry_run,
            strategy=spec.strategy, rate=spec.rate, total=sum(len(entries) for entries in grouped),
            waves=[WaveProgress(index=w.index, name=w.name, mode=w.mode, size=w.size, depends_on=w.depends_on,
                                wait_seconds=w.wait_seconds) for w in waves],
            manual=[ManualProgress(id=e.id, wave=index, role=e.role, instructions=e.instructions, timeout=e.timeout)
                    for index, entries in enumerate(grouped) for e in entries if isinstance(e, ManualStep)],
            started_at=now, updated_at=now,
            estimated_monthly_savings=round(sum(r.estimated_monthly_savings for r in recs), 2),
        )
        await self.store.save_recommendations(recs)
        try:
            await self.store.plans.create(view, grouped)
        except PlanExists:
            if await self._exists(plan_id):
                return await self.progress(plan_id)
            raise ReclaimError(f"plan {plan_id} already exists") from None
        plan = PlanInput(options=spec.options.model_copy(update={"dry_run": spec.dry_run}),
                         policy=policy or Policy(), view=view)
        plan.account_policies = account_policies(accounts, plan.policy, recs)
        plan.check_accounts = accounts is not None
        if history_limit is not None:
            plan.history_limit = history_limit
        with contextlib.suppress(WorkflowAlreadyStartedError):  # an earlier attempt of this submission started it
            await self.client.start_workflow(
                PlanWorkflow.run, plan, id=plan_workflow_id(plan_id), task_queue=self.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                priority=for_plan("+".join(view.customer_ids)),
            )
        return view

    async def _exists(self, plan_id: str) -> bool:
        try:
            await self.handle(plan_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def progress(self, plan_id: str) -> PlanView:
        """Live from the workflow while it runs; from the store once it has closed."""
        handle = self.handle(plan_id)
        live_error: RPCError | None = None
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                return await handle.query(PlanWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                live_error = exc  # no worker answering right now (one restarting, say): the stored view
        stored = await self.store.plans.get(plan_id)
        if stored is None and live_error is not None:
            raise ReclaimError(f"plan {plan_id}: no answer from a worker ({live_error.message})")
        if stored is None:
            raise NotFound(f"no plan {plan_id}")
        return stored

    async def wait(self, plan_id: str, until: Collection[PlanStatus] = PLAN_SETTLED,
                   timeout: float = 600.0) -> PlanView:
        return await poll(
            lambda: self.progress(plan_id), lambda view: view.status in until,
            interval=0.1, backoff=1.5, max_interval=1.0, timeout=timeout, too_long=lambda view: ReclaimError(
                f"plan {plan_id} is still {view.status.value} after {timeout:.0f} s"),
        )

    async def decide(self, plan_id: str, approve: bool, decision: PlanDecision) -> str:
        if approve and decision.items is not None:
            planned = await self.store.plans.planned_ids(plan_id)
            unknown = sorted(set(decision.items) - planned)
            if unknown:
                raise Refused("not planned by the dry run (refused there, or not in the plan): " + ", ".join(unknown[:10]))
        update = PlanWorkflow.approve_update if approve else PlanWorkflow.reject_update
        if self.signer is not None:
            decision = self.signer.sign(plan_workflow_id(plan_id), plan_decision(approve), decision)
        return await self._update(plan_id, update, decision)

    async def control(self, plan_id: str, action: str, control: PlanControl) -> str:
        updates = {"pause": PlanWorkflow.pause_update, "resume": PlanWorkflow.resume_update,
                   "abort": PlanWorkflow.abort_update}
        if action not in updates:
            raise ReclaimError(f"unknown plan action {action}: use pause, resume or abort")
        return await self._update(plan_id, updates[action], control)

    async def answer(self, plan_id: str, confirm: bool, decision: ManualDecision) -> str:
        """Confirm or fail a waiting manual item (the plan's validator says why not, if not)."""
        update = PlanWorkflow.confirm_update if confirm else PlanWorkflow.fail_update
        if self.signer is not None:
            decision = self.signer.sign(plan_workflow_id(plan_id), manual_decision(confirm), decision)
        return await self._update(plan_id, update, decision)

    async def _update(self, plan_id: str, update: Any, arg: Any) -> str:
        try:
            result: str = await self.handle(plan_id).execute_update(update, arg)
            return result
        except WorkflowUpdateFailedError as exc:
            raise Refused(_cause_message(exc)) from None
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise ReclaimError(exc.message) from None
        ended = await self.store.plans.get(plan_id)
        if ended is None:
            raise NotFound(f"no running plan {plan_id}")
        raise Refused(f"plan {plan_id} is {ended.status.value}: it has ended")

    async def report(self, plan_id: str) -> PlanReport:
        """The stored report once the plan ended (with later rollbacks folded in); a live one before."""
        view = await self.progress(plan_id)
        return build_report(view, await self.store.plans.items(plan_id))
