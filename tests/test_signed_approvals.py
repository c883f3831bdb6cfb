"""Signed approvals on the real dev server and moto: with approval public keys in the policy, only a
decision Reclaim signed counts (domain/signing.py; README, Deployment).

The stock-CLI path (a raw update or signal naming any actor and role) is refused with its reason: an
update in its validator (nothing enters the history; a Reclaim client records the refusal in the audit
trail), a signal in the run's own approvals. Without keys in the policy nothing changes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from domain.execution import ApprovalInput, ApprovalRecord
from domain.manual import ManualDecision
from domain.plan import PLAN_TERMINAL, PlanDecision, PlanSpec, PlanStatus
from domain.policy import Policy, Role
from domain.signing import public_key_text
from domain.status import ExecutionStatus as S
from runtime.approval_key import ApprovalSigner
from runtime.settings import Settings
from starter.api.app import create_app
from starter.api.deps import Services
from starter.executions import Executions, Refused, kept_open
from starter.plans import Plans
from tests.conftest import AwsAccount, Stack
from tests.helpers import eventually, recommendation, request
from tests.test_api import SUBJECT, TOKENS, rec_for, settled, token_store
from tests.test_plans import _until
from worker import WORKFLOWS, workflow_runner
from workflows.execution import ExecutionWorkflow
from workflows.plan import PlanWorkflow

KEY = Ed25519PrivateKey.generate()
PUBLIC = public_key_text(KEY)
SIGNER = ApprovalSigner(KEY)
SIGNED_POLICY = Policy(approval_public_keys=[PUBLIC])
FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}


@dataclass
class SignedApi:
    http: httpx.AsyncClient
    stack: Stack
    acme: str

    async def act(self, who: str, path: str, **body: Any) -> httpx.Response:
        return await self.http.post(path, json=body, headers={"Authorization": f"Bearer {TOKENS[who]}"})


@pytest_asyncio.fixture
async def signed_api(stack: Stack) -> AsyncIterator[SignedApi]:
    """The API as deployed with signed approvals on: the public key in its settings (so in every
    policy it starts), the private key in its steering."""
    suffix = uuid.uuid4().hex[:10]
    acme = f"acme-{suffix}"
    app = create_app(Services(
        settings=Settings(approval_public_key=PUBLIC), store=stack.store, tokens=token_store(acme, f"globex-{suffix}"),
        executions=Executions(stack.client, stack.task_queue, signer=SIGNER),
    ))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        yield SignedApi(http, stack, acme)


async def _parked(stack: Stack, aws: AwsAccount, policy: Policy = SIGNED_POLICY) -> tuple[str, str]:
    instance = aws.instance()
    req = request(recommendation("ec2.stop", instance), auto_approve=False).model_copy(update={"policy": policy})
    started = await stack.executions.start(req)
    assert (await stack.executions.wait(started.execution_id)).status is S.AWAITING_APPROVAL
    return started.execution_id, instance


async def _replays(stack: Stack, workflow_id: str) -> None:
    """The run's history as it stands replays on today's code: the signal path's refusals (commands
    of their own: the view's records and the read model's writes) come out the same."""
    history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def _refused_update(stack: Stack, execution_id: str, attempt: ApprovalInput | dict[str, Any]) -> str:
    """The stock client's update (`temporal workflow update execute --name approve --input ...`)."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await stack.client.get_workflow_handle(execution_id).execute_update("approve", attempt)
    assert isinstance(refused.value.cause, ApplicationError)
    return refused.value.cause.message


async def test_a_signed_approval_through_the_api_is_accepted_an_unsigned_one_is_refused_and_recorded(
    signed_api: SignedApi, aws: AwsAccount
) -> None:
    stack, instance = signed_api.stack, aws.instance()
    started = await signed_api.act("operator", "/api/v1/executions/execute",
                                   recommendation=rec_for(signed_api.acme, instance).model_dump(mode="json", exclude_none=True),
                                   auto_approve=False)
    assert started.status_code == 202, started.text
    eid = started.json()["execution_id"]
    assert (await settled(stack, eid)).status is S.AWAITING_APPROVAL

    # As the issue tried it: the stock CLI naming an admin. The update's validator refuses it.
    stock_cli = {"actor": SUBJECT["approver"], "role": "admin", "comment": "trust me"}
    assert (await _refused_update(stack, eid, stock_cli)).startswith(
        "unsigned: this execution accepts only decisions signed by Reclaim")
    # A Reclaim client without the key (`reclaim approve` on a machine without it): refused and kept in
    # the audit trail, as every refused update is.
    keyless = Executions(stack.client, stack.task_queue, kept_open(stack.store), via="update")
    with pytest.raises(Refused, match=r"^unsigned"):
        await keyless.decide(eid, True, ApprovalInput(actor="bob", role=Role.ADMIN))
    # The signal path records the refusal in the run itself.
    await stack.client.get_workflow_handle(eid).signal("approve", stock_cli)

    async def signal_recorded() -> bool:
        return len((await stack.executions.status(eid)).approvals) == 1
    await eventually(signal_recorded)
    view = await stack.executions.status(eid)
    assert view.status is S.AWAITING_APPROVAL and aws.instance_state(instance)[0] == "running"
    assert [(a.actor, a.accepted, a.via, (a.refusal or "")[:8]) for a in view.approvals] == [
        (SUBJECT["approver"], False, "signal", "unsigned")]
    # The audit trail: the keyless client's refused update, and the refused signal as the run wrote it.
    async def both_in_the_trail() -> bool:
        return len(await stack.store.list_approvals(eid)) == 2
    await eventually(both_in_the_trail)
    trail = await stack.store.list_approvals(eid)
    assert sorted((a.actor, a.accepted, a.via, (a.refusal or "")[:8]) for a in trail) == [
        (SUBJECT["approver"], False, "signal", "unsigned"), ("bob", False, "update", "unsigned")]

    approved = await signed_api.act("approver", f"/api/v1/executions/{eid}/approve", comment="idle since May")
    assert approved.status_code == 200, approved.text
    assert approved.json()["accepted"] is True and approved.json()["actor"] == SUBJECT["approver"]
    done = await stack.executions.wait(eid, until=frozenset({S.COMPLETED}))
    assert [(a.actor, a.accepted) for a in done.approvals] == [(SUBJECT["approver"], False), (SUBJECT["approver"], True)]
    assert aws.instance_state(instance)[0] == "stopped"
    # What the run started with: the public key, never the private one.
    started_with = (await stack.client.get_workflow_handle(eid).fetch_history()).events[0]
    assert PUBLIC.encode() in started_with.workflow_execution_started_event_attributes.input.payloads[0].data


@pytest.mark.parametrize("path", ["update", "signal"])
async def test_forged_foreign_altered_and_old_signatures_are_refused(stack: Stack, aws: AwsAccount, path: str) -> None:
    eid, instance = await _parked(stack, aws)
    other, _ = await _parked(stack, aws)
    bob = ApprovalInput(actor="bob", role=Role.APPROVER, comment="ok")
    late = ApprovalSigner(KEY, clock=lambda: datetime.now(UTC) - timedelta(minutes=20))
    attempts = {
        "forged": ApprovalSigner(Ed25519PrivateKey.generate()).sign(eid, "approve", bob),
        "another execution's": SIGNER.sign(other, "approve", bob),
        "a rejection's": SIGNER.sign(eid, "reject", bob),
        "another actor's": SIGNER.sign(eid, "approve", bob).model_copy(update={"actor": "carol"}),
        "another role's": SIGNER.sign(eid, "approve", bob).model_copy(update={"role": Role.ADMIN}),
        "expired": late.sign(eid, "approve", bob),
    }
    expected = {what: "too old" if what == "expired" else "does not match this approve" for what in attempts}
    handle = stack.executions.handle(eid)
    if path == "update":
        refusals = {what: await _refused_update(stack, eid, attempt) for what, attempt in attempts.items()}
    else:
        for attempt in attempts.values():
            await handle.signal(ExecutionWorkflow.approve_signal, attempt)

        async def all_recorded() -> bool:
            return len((await stack.executions.status(eid)).approvals) == len(attempts)
        await eventually(all_recorded)
        recorded = (await stack.executions.status(eid)).approvals
        assert not any(a.accepted for a in recorded)
        refusals = dict(zip(attempts, [a.refusal or "" for a in recorded], strict=True))
    assert {what: expected[what] in refusal for what, refusal in refusals.items()} == dict.fromkeys(attempts, True), \
        refusals
    assert (await stack.executions.status(eid)).status is S.AWAITING_APPROVAL
    assert aws.instance_state(instance)[0] == "running"

    # The same decision signed as it is, for this execution, now: accepted on either path.
    if path == "update":
        record: ApprovalRecord = await handle.execute_update(ExecutionWorkflow.approve_update,
                                                             SIGNER.sign(eid, "approve", bob))
        assert record.accepted
    else:
        await handle.signal(ExecutionWorkflow.approve_signal, SIGNER.sign(eid, "approve", bob))
    done = await stack.executions.wait(eid, until=frozenset({S.COMPLETED}))
    assert done.approvals[-1].accepted and done.approvals[-1].actor == "bob"
    assert aws.instance_state(instance)[0] == "stopped"
    # An old signature replayed to the other execution, or replayed here once decided: refused.
    replayed = SIGNER.sign(eid, "approve", bob)
    assert "does not match" in await _refused_update(stack, other, replayed)
    await stack.executions.cancel(other)
    await _replays(stack, eid)


async def test_without_keys_in_the_policy_decisions_are_taken_at_their_word(stack: Stack, aws: AwsAccount) -> None:
    """Runs started before the setting (and deployments without it): as before, signed or not."""
    eid, instance = await _parked(stack, aws, policy=Policy())
    record = await stack.client.get_workflow_handle(eid).execute_update(
        "approve", {"actor": "bob", "role": "approver"}, result_type=ApprovalRecord)
    assert record.accepted
    rejected, _ = await _parked(stack, aws, policy=Policy())
    signing = Executions(stack.client, stack.task_queue, signer=SIGNER)
    assert (await signing.decide(rejected, False, ApprovalInput(actor="bob", role=Role.APPROVER))).accepted
    assert (await stack.executions.wait(rejected)).status is S.REJECTED
    await stack.executions.wait(eid, until=frozenset({S.COMPLETED}))
    assert aws.instance_state(instance)[0] == "stopped"


async def _plan_refusal(update: Awaitable[str]) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await update
    assert isinstance(refused.value.cause, ApplicationError)
    return refused.value.cause.message


def _manual_plan(rec: Any) -> PlanSpec:
    return PlanSpec.model_validate({
        "recommendations": [rec.model_dump(mode="json"), {
            "kind": "manual", "id": "announce", "role": "operator", "timeout": "PT10M",
            "instructions": "Tell **#batch-team**; paste the message's link as evidence."}],
        "strategy": "waves", "options": {**FAST, "auto_approve": False}, "dry_run": True,
        "waves": [{"name": "first", "items": ["announce"]},
                  {"name": "then", "items": [rec.id], "depends_on": ["first"]}]})


async def test_a_plan_s_approval_and_its_manual_answers_must_be_signed_too(stack: Stack, aws: AwsAccount) -> None:
    """The plan's policy carries the key: its dry run's approval (which approves every item) and
    the confirm / fail of its manual items are refused unsigned; its items take the plan's policy."""
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    keyless, signing = (Plans(stack.client, stack.task_queue, stack.store),
                        Plans(stack.client, stack.task_queue, stack.store, signer=SIGNER))
    plan_id = (await keyless.submit(_manual_plan(rec), requested_by="alice", policy=SIGNED_POLICY)).plan_id
    assert (await keyless.wait(plan_id, timeout=60)).status is PlanStatus.AWAITING_APPROVAL

    with pytest.raises(Refused, match=r"^unsigned"):
        await keyless.decide(plan_id, True, PlanDecision(actor="bob", role=Role.ADMIN))
    forged = ApprovalSigner(Ed25519PrivateKey.generate()).sign(
        keyless.handle(plan_id).id, "plan.approve", PlanDecision(actor="bob", role=Role.ADMIN))
    handle = keyless.handle(plan_id)
    assert "does not match this plan.approve" in await _plan_refusal(handle.execute_update(
        PlanWorkflow.approve_update, forged))
    # A signed execution approval does not approve a plan of the same id.
    as_execution = SIGNER.sign(keyless.handle(plan_id).id, "approve", PlanDecision(actor="bob", role=Role.ADMIN))
    assert "does not match" in await _plan_refusal(handle.execute_update(PlanWorkflow.approve_update, as_execution))
    await signing.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER, comment="reviewed"))

    await _until(signing, plan_id, lambda v: any(m.id == "announce" and m.status == "AWAITING_CONFIRMATION"
                                                 for m in v.manual))
    olga = ManualDecision(item="announce", actor="olga", role=Role.OPERATOR, evidence="https://chat.example.com/1")
    with pytest.raises(Refused, match=r"^unsigned"):
        await keyless.answer(plan_id, True, olga)
    altered = SIGNER.sign(keyless.handle(plan_id).id, "manual.confirm", olga).model_copy(update={"evidence": "x"})
    assert "does not match this manual.confirm" in await _plan_refusal(handle.execute_update(
        PlanWorkflow.confirm_update, altered))
    await keyless.handle(plan_id).signal(PlanWorkflow.confirm_signal, olga)  # refused, and among the plan's events

    async def signal_refused() -> bool:
        return any("via signal refused: unsigned" in e.message for e in (await signing.progress(plan_id)).events)
    await eventually(signal_refused)
    await signing.answer(plan_id, True, olga)
    done = await signing.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED and done.counts == {"CONFIRMED": 1, "COMPLETED": 1}, done
    assert aws.instance_state(instance)[0] == "stopped"
    await _replays(stack, handle.id)


async def test_the_api_signs_a_plan_s_approval_and_a_manual_answer(signed_api: SignedApi, aws: AwsAccount) -> None:
    """`POST /api/v1/plans` starts the plan with the key in its policy; its approve and confirm routes sign."""
    stack, instance = signed_api.stack, aws.instance("m5.large")
    rec = rec_for(signed_api.acme, instance)
    body = _manual_plan(rec).model_dump(mode="json", exclude_none=True)
    plan_id = f"signed-{uuid.uuid4().hex[:8]}"
    created = await signed_api.act("operator", "/api/v1/plans", **body, id=plan_id)
    assert created.status_code == 202, created.text
    plans = Plans(stack.client, stack.task_queue, stack.store)
    assert (await plans.wait(plan_id, timeout=60)).status is PlanStatus.AWAITING_APPROVAL
    handle = plans.handle(plan_id)
    assert (await _plan_refusal(handle.execute_update(
        PlanWorkflow.approve_update, PlanDecision(actor="bob", role=Role.ADMIN)))).startswith("unsigned")

    approved = await signed_api.act("approver", f"/api/v1/plans/{plan_id}/approve", comment="reviewed")
    assert approved.status_code == 200, approved.text
    await _until(plans, plan_id, lambda v: any(m.status == "AWAITING_CONFIRMATION" for m in v.manual))
    confirmed = await signed_api.act("operator", f"/api/v1/plans/{plan_id}/items/announce/confirm",
                                     comment="told them", evidence="https://chat.example.com/2")
    assert confirmed.status_code == 200, confirmed.text
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED and done.counts == {"CONFIRMED": 1, "COMPLETED": 1}, done
    assert aws.instance_state(instance)[0] == "stopped"
