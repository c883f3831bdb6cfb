"""Record PlanWorkflow histories (and a plan item's) for tests/test_replay.py.

`python -m tests.record_plan_histories [PREFIX] [SCENARIO ...]` runs a few plans on a
throwaway dev server and moto and writes their histories to tests/histories/PREFIX/plan_*.json:
an approved dry run with a drifted item (and one of its items' execution), a plan that
continued as new (its first run), a paused-then-aborted plan (scenario `executions`, the
default), and plans with manual items (scenario `manual`): one confirmed by update after a
refused signal, one failed by signal, one timed out, the waves behind them run or SKIPPED;
and a dry run that planned a manual item, approved, then confirmed by signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from datetime import timedelta
from pathlib import Path

from moto.server import ThreadedMotoServer

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from domain.manual import AWAITING_CONFIRMATION, ManualDecision
from domain.plan import PLAN_TERMINAL, PlanControl, PlanDecision, PlanSpec, PlanStatus, PlanView
from domain.policy import Role
from runtime.settings import Settings
from starter.demo import DemoAccount
from starter.devserver import free_port
from starter.plans import Plans
from starter.polling import poll
from starter.stack import embedded_stack
from tests.helpers import recommendation
from tests.notify_support import catch_all_notify_file, http_receiver
from workflows.plan import PlanWorkflow

OUT = Path(__file__).parent / "histories"
FAST = {"rollback_window": timedelta(0)}


def _spec(recs: list, **fields: object) -> PlanSpec:
    return PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in recs],
                                    "options": FAST, **fields})


SCENARIOS = ("executions", "manual")


async def main(prefix: str = "", scenarios: tuple[str, ...] = ("executions",)) -> None:
    with contextlib.ExitStack() as stack_context:
        await _main(prefix, scenarios, stack_context)


async def _main(prefix: str, scenarios: tuple[str, ...], stack_context: contextlib.ExitStack) -> None:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    account = DemoAccount(endpoint)
    home = Path(tempfile.mkdtemp())
    receiver = stack_context.enter_context(http_receiver())  # executions tell a webhook everything
    settings = Settings(home=home, task_queue="record-plans", aws_endpoint_url=endpoint, notify_file=catch_all_notify_file(home, receiver.url))
    # Items fail by AWS refusing to describe them (a missing resource is refused by policy, not failed).
    failing_instances = [account.instance("m5.large") for _ in range(2)]
    faults = FaultInjector([FaultRule("DescribeInstances", "UnauthorizedOperation", resource=i)
                            for i in failing_instances])
    sessions = SessionFactory(endpoint_url=endpoint, session_hooks=[faults.install])
    async with embedded_stack(settings, port=0, ui_port=None, persistent=False, sessions=sessions) as stack:
        plans = Plans(stack.client, settings.task_queue, stack.store)
        recorded: dict[str, tuple[str, str | None]] = {}
        if "executions" in scenarios:
            await _executions(plans, account, failing_instances, recorded)
        if "manual" in scenarios:
            await _manual(plans, account, recorded)

        OUT.mkdir(exist_ok=True)
        for name, (workflow_id, run_id) in recorded.items():
            handle = stack.client.get_workflow_handle(workflow_id, run_id=run_id)
            history = await handle.fetch_history()
            (OUT / prefix).mkdir(exist_ok=True)
            (OUT / prefix / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")
    moto.stop()


async def _executions(plans: Plans, account: DemoAccount, failing_instances: list[str],
                      recorded: dict[str, tuple[str, str | None]]) -> None:
    instances = [account.instance("m5.large") for _ in range(3)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    dry = (await plans.submit(_spec(recs, dry_run=True, strategy="sequential"), requested_by="alice")).plan_id
    await plans.wait(dry)
    account.ec2.create_tags(Resources=[instances[1]], Tags=[{"Key": "owner", "Value": "bob"}])
    await plans.decide(dry, True, PlanDecision(actor="bob", role=Role.APPROVER))
    await plans.wait(dry, until=PLAN_TERMINAL)
    recorded["plan_dry_run_approved_drift_refused"] = (plans.handle(dry).id, None)
    recorded["plan_item_approved_by_plan"] = (f"exec-{recs[0].id}", None)

    many = [recommendation("ec2.stop", account.instance("m5.large"), {"expected_instance_type": "m5.large"})
            for _ in range(16)]
    long_id = (await plans.submit(_spec(many, rate={"max_concurrency": 3}), requested_by="alice",
                                  history_limit=100)).plan_id
    await plans.wait(long_id, until=PLAN_TERMINAL)
    first_run = [e.run_id async for e in plans.client.list_workflows(f"WorkflowId = '{plans.handle(long_id).id}'")]
    recorded["plan_continued_as_new_first_run"] = (plans.handle(long_id).id, first_run[-1])

    failing = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in failing_instances]
    fine = [recommendation("ec2.stop", account.instance("m5.large"), {"expected_instance_type": "m5.large"})]
    paused = (await plans.submit(_spec([*failing, *fine], strategy="sequential",
                                       rate={"error_threshold": 1}), requested_by="alice")).plan_id
    assert (await plans.wait(paused)).status is PlanStatus.PAUSED
    await plans.control(paused, "abort", PlanControl(actor="olga", role=Role.OPERATOR, reason="enough"))
    await plans.wait(paused, until=PLAN_TERMINAL)
    recorded["plan_threshold_paused_aborted"] = (plans.handle(paused).id, None)


def _step(item_id: str, role: str = "operator", timeout: str = "PT10M") -> dict[str, str]:
    return {"kind": "manual", "id": item_id, "role": role, "timeout": timeout,
            "instructions": f"Do **{item_id}** by hand; give a link as evidence."}


async def _waiting(plans: Plans, plan_id: str, item_id: str) -> PlanView:
    view: PlanView = await poll(lambda: plans.progress(plan_id), lambda v: any(
        m.id == item_id and m.status == AWAITING_CONFIRMATION for m in v.manual), interval=0.1, timeout=120)
    return view


async def _manual(plans: Plans, account: DemoAccount, recorded: dict[str, tuple[str, str | None]]) -> None:
    recs = [recommendation("ec2.stop", account.instance("m5.large"), {"expected_instance_type": "m5.large"})
            for _ in range(3)]
    steps = [_step("announce"), _step("verify", role="approver"), _step("dashboard", timeout="PT2S")]
    spec = PlanSpec.model_validate({
        "recommendations": [r.model_dump(mode="json") for r in recs[:2]], "manual": steps, "options": FAST,
        "strategy": "waves", "waves": [
            {"name": "announce", "items": ["announce"]},
            {"name": "stop", "items": [recs[0].id], "depends_on": ["announce"]},
            {"name": "verify", "items": ["verify", "dashboard"], "depends_on": ["stop"]},
            {"name": "cleanup", "items": [recs[1].id], "depends_on": ["verify"]}]})
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    handle = plans.client.get_workflow_handle_for(PlanWorkflow.run, plans.handle(plan_id).id)
    await _waiting(plans, plan_id, "announce")
    await handle.signal(PlanWorkflow.confirm_signal, ManualDecision(item="announce", actor="vic", role=Role.VIEWER))
    await plans.answer(plan_id, True, ManualDecision(item="announce", actor="olga", role=Role.OPERATOR,
                                                     comment="told them", evidence="https://chat.example.com/m/1"))
    await _waiting(plans, plan_id, "verify")
    await handle.signal(PlanWorkflow.fail_signal, ManualDecision(item="verify", actor="bob", role=Role.APPROVER,
                                                                 comment="p99 doubled", evidence="OPS-7"))
    assert (await plans.wait(plan_id, until=PLAN_TERMINAL)).status is PlanStatus.COMPLETED_WITH_FAILURES
    recorded["plan_manual_confirmed_failed_timed_out"] = (plans.handle(plan_id).id, None)

    dry = PlanSpec.model_validate({
        "recommendations": [recs[2].model_dump(mode="json")], "manual": [_step("check")], "options": FAST,
        "dry_run": True, "strategy": "waves", "waves": [
            {"name": "check", "items": ["check"]}, {"name": "stop", "items": [recs[2].id], "depends_on": ["check"]}]})
    dry_id = (await plans.submit(dry, requested_by="alice")).plan_id
    assert (await plans.wait(dry_id)).status is PlanStatus.AWAITING_APPROVAL
    await plans.decide(dry_id, True, PlanDecision(actor="bob", role=Role.APPROVER))
    await _waiting(plans, dry_id, "check")
    await plans.client.get_workflow_handle_for(PlanWorkflow.run, plans.handle(dry_id).id).signal(
        PlanWorkflow.confirm_signal, ManualDecision(item="check", actor="olga", role=Role.OPERATOR))
    assert (await plans.wait(dry_id, until=PLAN_TERMINAL)).status is PlanStatus.COMPLETED
    recorded["plan_manual_dry_run_confirmed"] = (plans.handle(dry_id).id, None)


if __name__ == "__main__":
    import sys

    chosen = tuple(sys.argv[2:]) or ("executions",)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "", chosen))
