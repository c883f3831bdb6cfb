"""Plans end to end: real Temporal dev server, real worker, moto, the SQLite store."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from activities.faults import FaultInjector, FaultRule
from domain.execution import ApprovalInput, ExecutionView, dry_run_id_for
from domain.plan import PLAN_TERMINAL, PlanControl, PlanDecision, PlanSpec, PlanStatus, PlanView, WaveState
from domain.plan_report import ReportItem, render_markdown
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import NotFound, Refused
from starter.plans import Plans
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation

FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}


@pytest.fixture
def plans(stack: Stack) -> Plans:
    return Plans(stack.client, stack.task_queue, stack.store)


async def test_parallel_plan_completes(plans: Plans, aws: AwsAccount) -> None:
    instances = [aws.instance("m5.large") for _ in range(3)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    spec = PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in recs],
                                    "strategy": "parallel", "options": FAST})
    view = await plans.submit(spec, requested_by="alice")
    done = await plans.wait(view.plan_id, timeout=120)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {S.COMPLETED.value: 3}
    assert done.waves[0].state is WaveState.SUCCEEDED
    assert all(aws.instance_state(i)[0] == "stopped" for i in instances)
    report = await plans.report(view.plan_id)
    assert [line.status for line in report.items] == ["COMPLETED"] * 3


def _spec(recs: list, **fields: object) -> PlanSpec:
    fields.setdefault("options", FAST)
    return PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in recs], **fields})


async def test_approved_dry_run_runs_exactly_its_set_and_refuses_drift(
    plans: Plans, stack: Stack, aws: AwsAccount
) -> None:
    instances = [aws.instance("m5.large") for _ in range(4)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances[:3]]
    missing = recommendation("ec2.stop", "i-0000000000000dead", {"expected_instance_type": "m5.large"})
    # auto_approve off: without the plan's approval every item would wait for a person.
    spec = _spec([*recs, missing], dry_run=True, options={**FAST, "auto_approve": False})
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id

    dry = await plans.wait(plan_id, timeout=120)
    assert dry.status is PlanStatus.AWAITING_APPROVAL, dry.reason
    assert dry.counts == {S.PLANNED.value: 3, "REFUSED": 1}  # a resource gone is an answer, not a failure
    assert all(aws.instance_state(i)[0] == "running" for i in instances)  # a dry run changes nothing
    report = await plans.report(plan_id)
    assert {line.recommendation_id: line.status for line in report.items} == {
        **{r.id: "PLANNED" for r in recs}, missing.id: "REFUSED"}
    # A dry run's id says what it is (`dryrun-`), never `plan-` like the plan's own `plan:` id.
    assert {line.execution_id for line in report.items} == {dry_run_id_for(r.id) for r in [*recs, missing]}

    # Someone changes one resource after the dry run was reviewed.
    aws.ec2.create_tags(Resources=[instances[1]], Tags=[{"Key": "owner", "Value": "bob"}])

    with pytest.raises(Refused, match="cannot approve"):
        await plans.decide(plan_id, True, PlanDecision(actor="alice", role=Role.APPROVER))
    with pytest.raises(Refused, match="role viewer"):
        await plans.decide(plan_id, True, PlanDecision(actor="carol", role=Role.VIEWER))
    with pytest.raises(Refused, match="not planned"):
        await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER, items=[missing.id]))
    assert (await plans.progress(plan_id)).status is PlanStatus.AWAITING_APPROVAL

    await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER, comment="reviewed"))
    done = await plans.wait(plan_id, timeout=120)
    # Drift refused by policy: counted apart, not a failure (the wave and the plan did not fail).
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert "1 refused by policy" in (done.reason or "")
    assert done.counts == {S.COMPLETED.value: 2, "REFUSED": 1, "NOT_APPROVED": 1}
    assert done.failures == 0 and done.waves[0].state is WaveState.SUCCEEDED
    assert done.approval is not None and done.approval.actor == "bob"
    assert [aws.instance_state(i)[0] for i in instances] == ["stopped", "running", "stopped", "running"]

    report = await plans.report(plan_id)
    by_id = {line.recommendation_id: line for line in report.items}
    assert by_id[missing.id].status == "NOT_APPROVED"
    drifted = by_id[recs[1].id]
    assert drifted.status == "REFUSED"
    assert "drifted since the approved dry run: tag owner was absent, now 'bob'" in (drifted.reason or "")
    assert report.failures == []
    assert [r.recommendation_id for r in report.refusals] == [recs[1].id]
    # The approval the items ran under is the plan's, recorded in each execution's audit.
    view = await stack.executions.status(by_id[recs[0].id].execution_id or "")
    assert [(a.actor, a.via) for a in view.approvals] == [("bob", f"plan {plan_id}")]
    assert "NOT_APPROVED 1" in render_markdown(report)
    assert "## Refused by policy" in render_markdown(report) and "## Failures" not in render_markdown(report)


async def test_approving_a_subset_runs_only_that_subset(plans: Plans, aws: AwsAccount) -> None:
    instances = [aws.instance("m5.large") for _ in range(3)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    plan_id = (await plans.submit(_spec(recs, dry_run=True), requested_by="alice")).plan_id
    assert (await plans.wait(plan_id, timeout=120)).status is PlanStatus.AWAITING_APPROVAL
    await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER, items=[recs[2].id]))
    done = await plans.wait(plan_id, timeout=120)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {S.COMPLETED.value: 1, "NOT_APPROVED": 2}
    assert [aws.instance_state(i)[0] for i in instances] == ["running", "running", "stopped"]


async def test_rejected_dry_run_aborts_and_changes_nothing(plans: Plans, aws: AwsAccount) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    plan_id = (await plans.submit(_spec([rec], dry_run=True), requested_by="alice")).plan_id
    assert (await plans.wait(plan_id, timeout=120)).status is PlanStatus.AWAITING_APPROVAL
    await plans.decide(plan_id, False, PlanDecision(actor="bob", role=Role.APPROVER, comment="not now"))
    done = await plans.wait(plan_id, timeout=60)
    assert done.status is PlanStatus.ABORTED
    assert done.reason == "dry run rejected by bob: not now"
    assert aws.instance_state(instance)[0] == "running"


async def test_items_are_approved_one_by_one_and_the_plan_pauses_resumes_and_aborts(
    plans: Plans, stack: Stack, aws: AwsAccount
) -> None:
    instances = [aws.instance("m5.large") for _ in range(4)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    spec = _spec(recs, strategy="sequential", options={**FAST, "auto_approve": False})
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    first = f"exec-{recs[0].id}"
    assert (await _settled(stack, first)).status is S.AWAITING_APPROVAL
    control = PlanControl(actor="olga", role=Role.OPERATOR)

    with pytest.raises(Refused, match="role viewer"):
        await plans.control(plan_id, "pause", PlanControl(actor="vic", role=Role.VIEWER))
    assert "pause accepted" in await plans.control(plan_id, "pause", control)
    with pytest.raises(Refused, match=r"only a RUNNING"):
        await plans.control(plan_id, "pause", control)
    await stack.executions.decide(first, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    paused = await _until(plans, plan_id, lambda v: v.counts.get("COMPLETED") == 1)
    assert paused.status is PlanStatus.PAUSED and paused.running == 0  # no new item while paused

    await plans.control(plan_id, "resume", control)
    second = f"exec-{recs[1].id}"
    assert (await _settled(stack, second)).status is S.AWAITING_APPROVAL
    await plans.control(plan_id, "abort", PlanControl(actor="olga", role=Role.OPERATOR, reason="change freeze"))
    done = await plans.wait(plan_id, timeout=60)
    assert done.status is PlanStatus.ABORTED and done.reason == "change freeze"
    assert done.counts == {"COMPLETED": 1, "CANCELLED": 1, "NOT_STARTED": 2}
    assert [aws.instance_state(i)[0] for i in instances] == ["stopped", "running", "running", "running"]
    with pytest.raises(Refused, match="ABORTED"):
        await plans.control(plan_id, "resume", control)


async def _until(plans: Plans, plan_id: str, check: Any, timeout: float = 60) -> PlanView:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await plans.progress(plan_id)
        if check(view):
            return view
        assert asyncio.get_running_loop().time() < deadline, view
        await asyncio.sleep(0.1)


async def _settled(stack: Stack, execution_id: str) -> ExecutionView:
    """The plan starts its items asynchronously: wait for the execution to exist, then to settle."""
    for _ in range(300):
        try:
            return await stack.executions.wait(execution_id, timeout=60)
        except NotFound:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{execution_id} never started")


def failing_instance(aws: AwsAccount, faults: FaultInjector) -> str:
    """An instance AWS refuses to describe to us: its execution FAILS (a refusal by policy would not count)."""
    instance = aws.instance("m5.large")
    faults.rules.append(FaultRule("DescribeInstances", "UnauthorizedOperation", resource=instance))
    return instance


async def test_error_threshold_pauses_and_holds_exactly(
    plans: Plans, stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    """Concurrency 2, threshold 2: once two items failed, only the one already running may finish."""
    failing = [recommendation("ec2.stop", failing_instance(aws, faults), {"expected_instance_type": "m5.large"})
               for _ in range(3)]
    fine = [recommendation("ec2.stop", aws.instance("m5.large"), {"expected_instance_type": "m5.large"})
            for _ in range(3)]
    spec = _spec([*failing, *fine], strategy="parallel", rate={"max_concurrency": 2, "error_threshold": "2"})
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    paused = await plans.wait(plan_id, timeout=120)
    assert paused.status is PlanStatus.PAUSED
    assert paused.reason == "error threshold reached: 2 failed items (threshold 2)"
    # Items 0 and 1 start; one fails and frees a slot for item 2; the second failure reaches the threshold.
    assert paused.counts[S.FAILED.value] >= 2 and sum(paused.counts.values()) <= 3
    settled = await _until(plans, plan_id, lambda v: v.running == 0)
    await asyncio.sleep(1.0)
    later = await plans.progress(plan_id)
    assert later.counts == settled.counts and sum(later.counts.values()) <= 3  # nothing new started
    assert all(aws.instance_state(r.resource_id)[0] == "running" for r in fine)

    # Resuming counts failures afresh.
    await plans.control(plan_id, "resume", PlanControl(actor="olga", role=Role.OPERATOR))
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED_WITH_FAILURES, done.reason
    assert done.counts == {S.FAILED.value: 3, S.COMPLETED.value: 3}
    assert all(aws.instance_state(r.resource_id)[0] == "stopped" for r in fine)


async def test_a_plan_continues_as_new_and_keeps_its_history_bounded(
    plans: Plans, stack: Stack, aws: AwsAccount
) -> None:
    # Every item costs the plan at least three events (child initiated, started, settled), so 64
    # items cannot fit in one run of at most 183 events, however the server batches the rest.
    ids = aws.ec2.run_instances(ImageId=aws.ami(), MinCount=64, MaxCount=64, InstanceType="m5.large")
    instances = [i["InstanceId"] for i in ids["Instances"]]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    spec = _spec(recs, strategy="by_region", rate={"max_concurrency": 4})
    plan_id = (await plans.submit(spec, requested_by="alice", history_limit=100)).plan_id
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=300)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {S.COMPLETED.value: 64}
    assert all(aws.instance_state(i)[0] == "stopped" for i in instances)
    continued = sum(1 for e in done.events if "continuing as new" in e.message)
    assert continued >= 1, done.events
    lengths = await _run_lengths(stack, plans.handle(plan_id).id, continued + 1)
    # Once the limit is reached no item starts; each of the (at most 4) items in flight still settles:
    # its signal and completion with their workflow tasks (8 events) and at worst one timed flush of
    # its outcome (timer, activity and their tasks: 11); then the last flush and the continue (7).
    assert max(lengths) <= 100 + 4 * (8 + 11) + 7, lengths
    report = await plans.report(plan_id)
    assert len(report.items) == 64 and {line.status for line in report.items} == {"COMPLETED"}


async def _run_lengths(stack: Stack, workflow_id: str, runs: int) -> list[int]:
    """Each run's history length (visibility is eventually consistent: wait for every run)."""
    for _ in range(100):
        found = [e.run_id async for e in stack.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        if len(found) == runs:
            break
        await asyncio.sleep(0.1)
    assert len(found) == runs, found
    return [len((await stack.client.get_workflow_handle(workflow_id, run_id=r).fetch_history()).events)
            for r in found]


async def test_refusals_by_policy_are_counted_apart_and_never_reach_the_threshold(
    plans: Plans, aws: AwsAccount
) -> None:
    """Traps (production, protected) refused at validation are answers: a threshold of 1 is not reached."""
    traps = [aws.instance("m5.large", tags={"env": "production"}) for _ in range(2)]
    traps.append(aws.instance("m5.large", tags={"reclaim:protect": "true"}))
    fine = [aws.instance("m5.large") for _ in range(2)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in [*traps, *fine]]
    spec = _spec(recs, strategy="parallel", rate={"max_concurrency": 2, "error_threshold": "1"})
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {"REFUSED": 3, S.COMPLETED.value: 2}
    assert done.failures == 0 and done.waves[0].state is WaveState.SUCCEEDED
    report = await plans.report(plan_id)
    assert report.failures == [] and len(report.refusals) == 3
    assert {r.reason.split(":")[0] for r in report.refusals if r.reason} == {
        "refused (production)", "refused (protected)"}
    assert [aws.instance_state(i)[0] for i in traps] == ["running"] * 3
    assert "## Refused by policy" in render_markdown(report)


async def test_busy_resources_are_refusals_too_never_failures(plans: Plans, stack: Stack, aws: AwsAccount) -> None:
    """Items whose resource another execution holds are refused (busy) and counted apart, as the
    production and protected traps are: a threshold of 1 is not reached, the wave succeeds."""
    from domain.execution import lease_id_for
    from tests.conftest import ACCOUNT, REGION
    from workflows.lease import LeaseInput, ResourceLeaseWorkflow

    held = [aws.instance("m5.large") for _ in range(2)]
    fine = aws.instance("m5.large")
    leases = [await stack.client.start_workflow(
        ResourceLeaseWorkflow.run, LeaseInput(holder="exec-someone-else"),
        id=lease_id_for(ACCOUNT, REGION, i), task_queue=stack.task_queue) for i in held]
    try:
        recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in [*held, fine]]
        spec = _spec(recs, strategy="parallel", rate={"error_threshold": "1"})
        plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
        done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
        assert done.status is PlanStatus.COMPLETED, done.reason
        assert done.counts == {"REFUSED": 2, S.COMPLETED.value: 1}
        assert done.failures == 0 and done.waves[0].state is WaveState.SUCCEEDED
        report = await plans.report(plan_id)
        assert report.failures == [] and {(r.reason or "").split(":")[0] for r in report.refusals} == {
            "refused (busy)"}
        assert [aws.instance_state(i)[0] for i in held] == ["running"] * 2
    finally:
        for lease in leases:
            await lease.signal(ResourceLeaseWorkflow.release)


async def test_a_plan_that_fails_itself_says_so_in_the_store_too(plans: Plans, stack: Stack, aws: AwsAccount) -> None:
    """Wave 2's items vanish from the store while the plan waits to start it: the plan ends FAILED,
    with the reason, in the store as well (it used to stay RUNNING there for ever)."""
    from sqlalchemy import delete

    from store.tables import PlanItemRow

    recs = [recommendation("ec2.stop", aws.instance("m5.large"), {"expected_instance_type": "m5.large"})
            for _ in range(2)]
    spec = _spec(recs, strategy="waves", waves=[
        {"name": "canary", "items": [recs[0].id]},
        # The pause between the waves is the window for the test to remove wave 2's rows; a loaded
        # machine takes well under a second to notice wave 1 ended, so 10 s leaves room.
        {"name": "rest", "items": [recs[1].id], "depends_on": ["canary"], "wait_seconds": 10}])
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    await _until(plans, plan_id, lambda v: v.counts.get(S.COMPLETED.value) == 1)
    async with stack.store._engine.begin() as conn:  # someone cleans up the table by hand
        await conn.execute(delete(PlanItemRow).where(PlanItemRow.plan_id == plan_id, PlanItemRow.wave == 1))
    ended = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert ended.status is PlanStatus.FAILED
    assert (ended.reason or "").startswith("the plan itself failed:"), ended.reason
    assert "wave rest has fewer stored items than planned" in (ended.reason or "")
    stored = await stack.store.plans.get(plan_id)
    assert stored is not None and stored.status is PlanStatus.FAILED
    assert aws.instance_state(recs[1].resource_id)[0] == "running"


@pytest.mark.parametrize(("plan_says", "read_model_says", "report_says"), [
    ("COMPLETED", "APPLYING", "COMPLETED"),  # the read model is behind (its writes wait out an outage)
    ("FAILED", "VALIDATING", "FAILED"),
    ("COMPLETED", "ROLLED_BACK", "ROLLED_BACK"),  # rolled back after the plan was done
    ("COMPLETED", "ROLLING_BACK", "ROLLING_BACK"),
    ("RUNNING", "APPLYING", "APPLYING"),  # not settled yet: the execution says more
    ("REFUSED", "REJECTED_BY_VALIDATION", "REFUSED"),
    ("COMPLETED", None, "COMPLETED"),
])
def test_a_report_line_takes_what_came_after_the_plan_never_a_lagging_read_model(
    plan_says: str, read_model_says: str | None, report_says: str,
) -> None:
    item = ReportItem(position=0, wave=0, recommendation=recommendation("ec2.stop", "i-0123456789abcdef0"),
                      status=plan_says, current_status=read_model_says, estimated_monthly_savings=1.0)
    assert item.final_status == report_says
