"""A drill plan of several servers per item and several waves, on the time-skipping server: the plan
report (JSON and Markdown) gives each server its own time to launch and each wave its first launch
request to last server launched. DRS is the clocked FakeDrs: each server launches a set time after
its job starts, in workflow time, so the figures are known to within the poll interval."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.plan import PlanDecision, PlanSpec, PlanStatus, PlanView, WaveState
from domain.plan_report import render_markdown
from domain.policy import Role
from starter.plans import PLAN_SETTLED, PLAN_TERMINAL, Plans
from store.repository import Store
from tests.conftest import ACCOUNT, REGION, AwsAccount
from tests.drs_fake import FakeDrs, server_clock, server_id
from tests.helpers import recommendation
from worker import build_worker

POLL = 30  # seconds between looks: each figure is its launch delay, late by at most this (and a step)
#: item -> its wave and its servers' launch delays (minutes after its job starts).
DRILLS = {"db": ("db", [4.25, 9.25]), "app-1": ("app", [2.25]), "app-2": ("app", [3.25, 6.25]),
          "web": ("web", [1.25])}


async def settled(env: WorkflowEnvironment, plans: Plans, plan_id: str, until: set[PlanStatus]) -> PlanView:
    """Let workflow time pass (the server skips from timer to timer) until the plan is in `until`;
    a bounded real-time look."""
    deadline = time.monotonic() + 90
    while (view := await plans.progress(plan_id)).status not in until:
        assert time.monotonic() < deadline, f"plan {plan_id} still {view.status} ({view.reason})"
        await env.sleep(timedelta(seconds=30))
    return view


async def test_a_multi_server_multi_wave_drill_reports_time_to_launch_per_server_and_wave(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor,
) -> None:
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), launch=lambda s: aws.instance("t3.micro"),
                   terminate=lambda iid: aws.ec2.terminate_instances(InstanceIds=[iid]), clock=server_clock)
    delays: dict[str, float] = {}
    recs = {}
    for name, (_wave, minutes) in DRILLS.items():
        sids = [fake.add_server(server_id(), {"app": "shop"}) for _ in minutes]
        delays.update(zip(sids, [m * 60 for m in minutes], strict=True))
        fake.launch_after.update({sid: timedelta(minutes=m) for sid, m in zip(sids, minutes, strict=True)})
        recs[name] = recommendation("drs.drill", sids[0], {"source_server_ids": sids, "poll_interval_seconds": POLL},
                                    savings=0)
    spec = PlanSpec.model_validate({
        "name": "drill timing", "recommendations": [r.model_dump(mode="json") for r in recs.values()],
        "strategy": "waves", "dry_run": True,
        "options": {"step_timeout": "PT10S", "verify_timeout": "PT5M", "rollback_window": "PT0S"},
        "waves": [{"name": "db", "items": [recs["db"].id]},
                  {"name": "app", "items": [recs["app-1"].id, recs["app-2"].id], "depends_on": ["db"]},
                  {"name": "web", "items": [recs["web"].id], "depends_on": ["app"], "wait_seconds": 60}]})
    fake.activate()
    queue = f"drill-plan-{uuid.uuid4()}"
    try:
        async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                                executor=activity_executor, max_concurrent_activities=16):
            plans = Plans(skipping_env.client, queue, store)
            plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
            dry = await settled(skipping_env, plans, plan_id, {PlanStatus.AWAITING_APPROVAL, *PLAN_SETTLED})
            assert dry.status is PlanStatus.AWAITING_APPROVAL, dry.reason
            await plans.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER, comment="drill"))
            done = await settled(skipping_env, plans, plan_id, set(PLAN_TERMINAL))
            report = await plans.report(plan_id)
    finally:
        fake.deactivate()

    assert done.status is PlanStatus.COMPLETED, done.reason
    assert [w.state for w in done.waves] == [WaveState.SUCCEEDED] * 3
    recovery = report.recovery
    assert recovery is not None
    # One row per server, every item's servers in order; each time its launch delay, to within a poll.
    assert [(r.recommendation_id, r.server_id) for r in recovery.servers] == [
        (recs[name].id, sid) for name in DRILLS for sid in recs[name].params["source_server_ids"]]
    for row in recovery.servers:
        assert row.measured == "server" and row.time_to_launch_seconds is not None
        assert delays[row.server_id] <= row.time_to_launch_seconds <= delays[row.server_id] + POLL + 10, row
    within = {r.server_id: r.time_to_launch_seconds for r in recovery.servers}
    first, second = recs["db"].params["source_server_ids"]
    assert within[second] - within[first] >= 4 * 60  # the per-server figures are not the item's
    # Each wave: its first launch request to its last server launched (parallel items start together).
    assert [(w.wave, w.items, w.launched, w.servers, w.servers_launched) for w in recovery.waves] == [
        ("db", 1, 1, 2, 2), ("app", 2, 2, 3, 3), ("web", 1, 1, 1, 1)]
    for wave, slowest in zip(recovery.waves, (9.25 * 60, 6.25 * 60, 1.25 * 60), strict=True):
        assert wave.time_to_launch_seconds is not None and wave.slowest_server_seconds is not None
        assert slowest <= wave.slowest_server_seconds <= wave.time_to_launch_seconds <= slowest + POLL + 20, wave
    assert recovery.total_seconds is not None and recovery.total_seconds >= (9.25 + 6.25 + 1.25) * 60 + 60
    # The stored report (JSON, as the API serves it) and the Markdown say the same.
    stored = await store.plans.report(plan_id)
    assert stored is not None and stored["recovery"] == recovery.model_dump(mode="json")
    markdown = render_markdown(report)
    db = recovery.waves[0]
    assert (f"| db | 1 | 1 | 2 of 2 | {db.time_to_launch_seconds:g} s | {db.slowest_server_seconds:g} s |"
            in markdown)
    for row in recovery.servers:
        assert (f"| {row.recommendation_id} | {row.wave} | {row.server_id} | COMPLETED "
                f"| {row.time_to_launch_seconds:g} s |") in markdown
