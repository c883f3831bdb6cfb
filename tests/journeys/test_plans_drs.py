"""A 3-wave recovery drill plan end to end: the dev server, a real worker, moto's EC2 for the recovery
instances' status checks, and DRS answered by the stateful Stubber of tests/drs_fake.py attached to
the client the worker's SessionFactory hands out (the seam the real client goes through)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from domain.plan import PlanDecision, PlanSpec, PlanStatus, WaveState
from domain.plan_report import render_markdown
from domain.policy import Role
from starter.plans import Plans
from tests.conftest import ACCOUNT, REGION, AwsAccount, Stack
from tests.drs_fake import FakeDrs, server_id
from tests.helpers import recommendation

FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}


@pytest.fixture
def plans(stack: Stack) -> Plans:
    return Plans(stack.client, stack.task_queue, stack.store)


def drills(aws: AwsAccount, stack: Stack, servers: list[str]) -> FakeDrs:
    def launch(sid: str) -> str:
        return aws.instance("t3.micro")

    def terminate(iid: str) -> None:
        aws.ec2.terminate_instances(InstanceIds=[iid])

    fake = FakeDrs(stack.sessions.client(ACCOUNT, REGION, "drs"), launch=launch, terminate=terminate)
    for sid in servers:
        fake.add_server(sid, {"app": "shop"})
    fake.activate()
    return fake


def spec(servers: list[str], **fields: Any) -> tuple[PlanSpec, list[str]]:
    recs = [recommendation("drs.drill", sid, {"source_server_ids": [sid], "poll_interval_seconds": 0}, savings=0)
            for sid in servers]
    ids = [r.id for r in recs]
    return PlanSpec.model_validate({
        "name": "quarterly drill", "recommendations": [r.model_dump(mode="json") for r in recs],
        "strategy": "waves", "dry_run": True, "options": FAST, "waves": [
            {"name": "db", "items": ids[:1]},
            {"name": "app", "items": ids[1:3], "depends_on": ["db"]},
            {"name": "web", "items": ids[3:], "depends_on": ["app"]}], **fields}), ids


async def until_terminated(fake: FakeDrs) -> None:
    for _ in range(300):  # cleanup runs after each item settles (rollback window 0): bounded look
        if not fake.recovery:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"recovery instances left: {sorted(fake.recovery)}")


async def test_three_wave_drill_plan(plans: Plans, stack: Stack, aws: AwsAccount) -> None:
    servers = [server_id(n) for n in range(1, 5)]
    fake = drills(aws, stack, servers)
    plan_spec, _ids = spec(servers)
    plan_id = (await plans.submit(plan_spec, requested_by="alice")).plan_id
    dry = await plans.wait(plan_id, timeout=60)
    assert dry.status is PlanStatus.AWAITING_APPROVAL, dry.reason
    assert fake.count("StartRecovery") == 0  # a dry run launches nothing
    await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER, comment="drill window"))

    done = await plans.wait(plan_id, timeout=60)
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert [w.state for w in done.waves] == [WaveState.SUCCEEDED] * 3
    started = [p["sourceServers"][0]["sourceServerID"] for name, p in fake.calls if name == "StartRecovery"]
    assert started[0] == servers[0] and set(started[1:3]) == set(servers[1:3]) and started[3] == servers[3]
    assert all(p["isDrill"] for name, p in fake.calls if name == "StartRecovery")
    assert max(fake.launched_at[s] for s in servers[:1]) <= min(fake.launched_at[s] for s in servers[1:])

    report = await plans.report(plan_id)
    assert report.recovery is not None
    assert [(w.wave, w.items, w.launched) for w in report.recovery.waves] == [("db", 1, 1), ("app", 2, 2),
                                                                             ("web", 1, 1)]
    assert all(s.time_to_launch_seconds is not None and s.time_to_launch_seconds >= 0
               for s in report.recovery.servers)
    assert [s.server_id for s in report.recovery.servers] == servers
    assert all(s.measured == "server" for s in report.recovery.servers)
    assert "## Recovery time (drills)" in render_markdown(report)
    await until_terminated(fake)  # end of drill: every instance it launched, and only those, terminated
    assert fake.count("TerminateRecoveryInstances") == 4


async def test_a_failed_launch_skips_the_waves_after_it_and_cleans_up(
        plans: Plans, stack: Stack, aws: AwsAccount) -> None:
    servers = [server_id(n) for n in range(11, 15)]
    fake = drills(aws, stack, servers)
    fake.fail[servers[2]] = "InsufficientInstanceCapacity in us-east-1a"
    plan_spec, ids = spec(servers)
    plan_id = (await plans.submit(plan_spec, requested_by="alice")).plan_id
    assert (await plans.wait(plan_id, timeout=60)).status is PlanStatus.AWAITING_APPROVAL
    await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER))
    done = await plans.wait(plan_id, timeout=60)
    assert done.status is PlanStatus.COMPLETED_WITH_FAILURES, done.reason
    assert [w.state for w in done.waves] == [WaveState.SUCCEEDED, WaveState.FAILED, WaveState.SKIPPED]
    report = await plans.report(plan_id)
    failed = {line.recommendation_id: line for line in report.failures}
    assert set(failed) == {ids[2]} and "InsufficientInstanceCapacity" in str(failed[ids[2]].reason)
    assert {line.recommendation_id: line.status for line in report.items}[ids[3]] == "SKIPPED"
    assert fake.count("StartRecovery") == 3
    await until_terminated(fake)
