"""Record PlanWorkflow histories (and a plan item's) for tests/test_replay.py.

`python -m tests.record_plan_histories [PREFIX] [SCENARIO ...]` runs a few plans on a
throwaway dev server and moto and writes their histories to tests/histories/PREFIX/plan_*.json:
an approved dry run with a drifted item (and one of its items' execution), a plan that
continued as new (its first run), a paused-then-aborted plan (scenario `executions`, the
default), and plans with manual items (scenario `manual`): one confirmed by update after a
refused signal, one failed by signal, one timed out, the waves behind them run or SKIPPED;
and a dry run that planned a manual item, approved, then confirmed by signal. Since
plan-tells-and-holds: plans telling the notify file's webhook (scenario `telling`: a dry run awaiting
approval then finished, a pause at the threshold resumed then finished) and a plan holding an account
disabled in the accounts file at a manual gate, then released (scenario `holds`; its items assume
their account's role, moto keeping each account apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer
from temporalio.client import WorkflowFailureError

from activities.accounts import AccountsSource
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


SCENARIOS = ("executions", "manual", "telling", "holds")
HELD_ACCOUNT, OTHER_ACCOUNT = "111111111111", "222222222222"


def _accounts_file(path: Path, held_enabled: bool = True) -> Path:
    path.write_text("defaults:\n  role_arn: arn:aws:iam::{account_id}:role/ReclaimExecutor\naccounts:\n"
                    f"  - {{id: \"{HELD_ACCOUNT}\", name: shop-a, customer: acme, enabled: {str(held_enabled).lower()}}}\n"
                    f"  - {{id: \"{OTHER_ACCOUNT}\", name: shop-b, customer: acme}}\n")
    return path


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
    accounts = _accounts_file(home / "accounts.yaml") if "holds" in scenarios else None
    settings = Settings(home=home, task_queue="record-plans", aws_endpoint_url=endpoint,
                        notify_file=catch_all_notify_file(home, receiver.url), accounts_file=accounts)
    # Items fail by AWS refusing to describe them (a missing resource is refused by policy, not failed).
    failing_instances = [account.instance("m5.large") for _ in range(2)]
    faults = FaultInjector([FaultRule("DescribeInstances", "UnauthorizedOperation", resource=i)
                            for i in failing_instances])
    sessions = SessionFactory(endpoint_url=endpoint, session_hooks=[faults.install],
                              accounts=AccountsSource(accounts) if accounts is not None else None)
    async with embedded_stack(settings, port=0, ui_port=None, persistent=False, sessions=sessions) as stack:
        plans = Plans(stack.client, settings.task_queue, stack.store, accounts=settings.accounts())
        recorded: dict[str, tuple[str, str | None]] = {}
        if "executions" in scenarios:
            await _executions(plans, account, failing_instances, recorded)
        if "manual" in scenarios:
            await _manual(plans, account, recorded)
        if "telling" in scenarios:
            await _telling(plans, account, failing_instances, recorded)
        if "holds" in scenarios:
            assert accounts is not None
            await _holds(plans, endpoint, accounts, recorded)

        OUT.mkdir(exist_ok=True)
        for name, (workflow_id, run_id) in recorded.items():
            handle = stack.client.get_workflow_handle(workflow_id, run_id=run_id)
            if run_id is None:  # a plan's view says it ended before its close step (report, notifications) ran
                with contextlib.suppress(WorkflowFailureError):
                    await asyncio.wait_for(handle.result(), timeout=300)
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


async def _telling(plans: Plans, account: DemoAccount, failing_instances: list[str],
                   recorded: dict[str, tuple[str, str | None]]) -> None:
    recs = [recommendation("ec2.stop", account.instance("m5.large"), {"expected_instance_type": "m5.large"})
            for _ in range(2)]
    dry = (await plans.submit(_spec(recs, dry_run=True), requested_by="alice")).plan_id
    assert (await plans.wait(dry)).status is PlanStatus.AWAITING_APPROVAL
    await plans.decide(dry, True, PlanDecision(actor="bob", role=Role.APPROVER))
    assert (await plans.wait(dry, until=PLAN_TERMINAL)).status is PlanStatus.COMPLETED
    recorded["plan_told_dry_run_approved_finished"] = (plans.handle(dry).id, None)

    failing = recommendation("ec2.stop", failing_instances[0], {"expected_instance_type": "m5.large"})
    fine = recommendation("ec2.stop", account.instance("m5.large"), {"expected_instance_type": "m5.large"})
    paused = (await plans.submit(_spec([failing, fine], strategy="sequential", rate={"error_threshold": 1}),
                                 requested_by="alice")).plan_id
    assert (await plans.wait(paused)).status is PlanStatus.PAUSED
    await plans.control(paused, "resume", PlanControl(actor="olga", role=Role.OPERATOR, reason="known issue"))
    assert (await plans.wait(paused, until=PLAN_TERMINAL)).status is PlanStatus.COMPLETED_WITH_FAILURES
    recorded["plan_told_threshold_paused_resumed_finished"] = (plans.handle(paused).id, None)


def _in_account(endpoint: str, account_id: str) -> str:
    """A running m5.large in `account_id` (us-east-1), made through an assumed role there."""
    import boto3

    creds = boto3.client("sts", region_name="us-east-1", endpoint_url=endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole", RoleSessionName="seed")["Credentials"]
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id=creds["AccessKeyId"],
                       aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    return str(ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1,
                                 InstanceType="m5.large")["Instances"][0]["InstanceId"])


async def _holds(plans: Plans, endpoint: str, accounts: Path, recorded: dict[str, tuple[str, str | None]]) -> None:
    def stop(account_id: str) -> Any:
        rec = recommendation("ec2.stop", _in_account(endpoint, account_id), {"expected_instance_type": "m5.large"})
        return rec.model_copy(update={"account_id": account_id})

    first, held, other = stop(HELD_ACCOUNT), [stop(HELD_ACCOUNT) for _ in range(2)], [stop(OTHER_ACCOUNT)]
    spec = PlanSpec.model_validate({
        "recommendations": [r.model_dump(mode="json") for r in [first, *held, *other]], "manual": [_step("gate")],
        "options": FAST, "rate": {"hold_recheck": 1}, "strategy": "waves", "waves": [
            {"name": "first", "items": ["gate", first.id]},
            {"name": "then", "items": [r.id for r in [*held, *other]], "depends_on": ["first"]}]})
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    await _waiting(plans, plan_id, "gate")
    _accounts_file(accounts, held_enabled=False)
    await plans.answer(plan_id, True, ManualDecision(item="gate", actor="olga", role=Role.OPERATOR))
    await poll(lambda: plans.progress(plan_id), lambda v: v.counts.get("HELD") == 2 and v.counts.get(
        "COMPLETED") == 2, interval=0.1, timeout=120)
    handle = plans.client.get_workflow_handle(plans.handle(plan_id).id)

    async def checks() -> int:
        history = await handle.fetch_history()
        return sum(1 for e in history.events if e.activity_task_scheduled_event_attributes.activity_type.name
                   == "check_plan_accounts")

    await poll(checks, lambda n: n >= 4, interval=0.2, timeout=60)  # two batches, then re-checks on the timer
    _accounts_file(accounts, held_enabled=True)
    assert (await plans.wait(plan_id, until=PLAN_TERMINAL)).status is PlanStatus.COMPLETED
    recorded["plan_held_account_then_released"] = (plans.handle(plan_id).id, None)


if __name__ == "__main__":
    import sys

    chosen = tuple(sys.argv[2:]) or ("executions",)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "", chosen))

