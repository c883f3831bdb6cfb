"""Plans tell people (PLAN_TELLS_AND_HOLDS): a dry run awaiting approval, a pause at the error
threshold and the end (with the report's summary and link) reach the notify file's channels, on the
real dev server; a dead channel is reported in the plan's history and never holds the plan."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from temporalio.client import Client, WorkflowExecutionStatus

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from activities.notify.delivery import NotifyActivities
from activities.notify.links import LinkBase
from domain.notifications import NotificationEvent, Severity
from domain.plan import (
    PLAN_TERMINAL,
    PlanControl,
    PlanDecision,
    PlanSpec,
    PlanStatus,
    PlanView,
    RateControl,
    Strategy,
)
from domain.plan_events import FINISHED_SEVERITY, plan_notification
from domain.policy import Role
from starter.plans import Plans
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import activity_names, recommendation
from tests.notify_support import HttpReceiver, http_receiver
from worker import build_worker

SECRET_ENV = "RECLAIM_TEST_WEBHOOK_SECRET"
FAST = {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=20),
        "rollback_window": timedelta(0)}
LINKS = LinkBase(public_url="https://reclaim.example.com", web_ui_url="https://temporal.example.com")


@pytest.fixture
def dead() -> Iterator[HttpReceiver]:
    """A channel that is down: every POST answers 503."""
    with http_receiver() as got:
        got.status = 503
        yield got


def _notify_file(folder: Path, live: str, dead: str | None) -> Path:
    import os

    os.environ.setdefault(SECRET_ENV, "test-webhook-secret")
    channels = f"  live:\n    type: webhook\n    url: {live}/\n    secret: env:{SECRET_ENV}\n"
    names = "live"
    if dead is not None:
        channels += f"  dead:\n    type: webhook\n    url: {dead}/\n    secret: env:{SECRET_ENV}\n"
        names = "dead, live"
    path = folder / "notify.yaml"
    # Plans of customer acme, by event; a rule with another customer must not match.
    path.write_text(f"channels:\n{channels}rules:\n"
                    f"  - events: [plan_awaiting_approval, plan_paused, plan_finished]\n"
                    f"    customers: [acme]\n    channels: [{names}]\n"
                    "  - customers: [someone-else]\n    channels: [live]\n")
    return path


async def _plans(client: Client, sessions: SessionFactory, store: Store, executor: ThreadPoolExecutor,
                 notify_file: Path) -> AsyncIterator[Plans]:
    task_queue = f"plan-told-{uuid.uuid4()}"
    notify = NotifyActivities.from_path(notify_file, links=LINKS)
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store, executor=executor,
                          max_concurrent_activities=16, notify=notify)
    async with worker:
        yield Plans(client, task_queue, store)


@pytest_asyncio.fixture
async def told(client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, tmp_path: Path,
               activity_executor: ThreadPoolExecutor, receiver: HttpReceiver) -> AsyncIterator[Plans]:
    async for plans in _plans(client, sessions, store, activity_executor, _notify_file(tmp_path, receiver.url, None)):
        yield plans


@pytest_asyncio.fixture
async def told_and_dead(client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, tmp_path: Path,
                        activity_executor: ThreadPoolExecutor, receiver: HttpReceiver,
                        dead: HttpReceiver) -> AsyncIterator[Plans]:
    path = _notify_file(tmp_path, receiver.url, dead.url)
    async for plans in _plans(client, sessions, store, activity_executor, path):
        yield plans


def _spec(recs: list[Any], **fields: object) -> PlanSpec:
    fields.setdefault("options", FAST)
    return PlanSpec.model_validate({"recommendations": [r.model_dump(mode="json") for r in recs], **fields})


async def _plan_events(receiver: HttpReceiver, plan_id: str, want: list[str],
                       timeout: float = 30.0) -> list[dict[str, Any]]:
    """The plan's notifications received (its items' executions tell too), once `want` arrived."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = [json.loads(r.body) for r in receiver.requests]
        mine = [b for b in bodies if b["notification"]["subject"] == "plan"
                and b["notification"]["subject_id"] == plan_id]
        if sorted(want) == sorted(b["event"] for b in mine):
            return mine
        assert time.monotonic() < deadline, f"got {[b['event'] for b in mine]}, waiting for {want}"
        await asyncio.sleep(0.05)


async def test_a_dry_run_awaiting_approval_and_its_end_are_told_with_links_and_summary(
    told: Plans, aws: AwsAccount, receiver: HttpReceiver
) -> None:
    recs = [recommendation("ec2.stop", aws.instance("m5.large"), {"expected_instance_type": "m5.large"})
            for _ in range(2)]
    plan_id = (await told.submit(_spec(recs, dry_run=True), requested_by="alice")).plan_id
    assert (await told.wait(plan_id, timeout=120)).status is PlanStatus.AWAITING_APPROVAL
    waiting_at = time.monotonic()
    (asked,) = await _plan_events(receiver, plan_id, ["plan_awaiting_approval"])
    assert time.monotonic() - waiting_at < 10  # told while it waits, not at its end
    assert asked["dedup_key"] == f"{plan_id}:plan_awaiting_approval:0"
    n = asked["notification"]
    assert n["customer_id"] == "acme" and n["severity"] == "info"
    assert n["links"]["approval_page"] == f"https://reclaim.example.com/approvals/plans/{plan_id}"
    assert n["links"]["web_ui"] == f"https://temporal.example.com/namespaces/default/workflows/plan%3A{plan_id}"
    assert "2 PLANNED" in n["reason"] and "Review the dry run" in asked["text"]

    await told.decide(plan_id, True, PlanDecision(actor="bob", role=Role.APPROVER))
    done = await told.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED
    bodies = await _plan_events(receiver, plan_id, ["plan_awaiting_approval", "plan_finished"])
    finished = next(b for b in bodies if b["event"] == "plan_finished")
    assert finished["dedup_key"] == f"{plan_id}:plan_finished:0"
    assert finished["notification"]["reason"].startswith("COMPLETED: every item done")
    assert "2 items (2 COMPLETED)" in finished["notification"]["reason"]
    verified = finished["notification"]["verified_monthly_savings"]
    assert verified > 0 and verified == pytest.approx(done.actual_monthly_savings)
    report = f"https://reclaim.example.com/api/v1/plans/{plan_id}/report?format=md"
    assert finished["notification"]["links"]["report"] == report and f"Report: {report}" in finished["text"]
    # Routed and delivered by ordinary activities of the plan (no local activity: no marker can move).
    names = activity_names(await told.handle(plan_id).fetch_history())
    assert names.count("route_notification") == 2 and names.count("deliver_notification") == 2
    assert "check_plan_accounts" not in names  # no accounts file: nothing to hold, nothing asked


async def test_a_pause_at_the_threshold_is_told_and_a_dead_channel_does_not_hold_the_plan(
    told_and_dead: Plans, aws: AwsAccount, faults: FaultInjector, receiver: HttpReceiver, dead: HttpReceiver
) -> None:
    plans = told_and_dead
    failing = aws.instance("m5.large")
    faults.rules.append(FaultRule("DescribeInstances", "UnauthorizedOperation", resource=failing))
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"})
            for i in (failing, aws.instance("m5.large"))]
    plan_id = (await plans.submit(_spec(recs, strategy="sequential", rate={"error_threshold": 1}),
                                  requested_by="alice")).plan_id
    assert (await plans.wait(plan_id, timeout=120)).status is PlanStatus.PAUSED
    (paused,) = await _plan_events(receiver, plan_id, ["plan_paused"])
    assert paused["notification"]["severity"] == "warning"
    assert "error threshold reached" in paused["notification"]["reason"]

    # The dead channel is asked too and fails; the plan does not wait for it: it is resumed, goes on, ends.
    await plans.control(plan_id, "resume", PlanControl(actor="olga", role=Role.OPERATOR))
    done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=120)
    assert done.status is PlanStatus.COMPLETED_WITH_FAILURES, done.reason
    await _plan_events(receiver, plan_id, ["plan_paused", "plan_finished"])
    assert any(json.loads(r.body)["event"] == "plan_paused" for r in dead.requests)
    # The dead channel's delivery is reported: retried, failing, in the plan's own history.
    handle = plans.handle(plan_id)
    deadline = time.monotonic() + 30
    while True:
        described = await handle.describe()
        assert described.status is WorkflowExecutionStatus.RUNNING  # still retrying the dead channel
        pending = [p for p in described.raw_description.pending_activities
                   if p.activity_type.name == "deliver_notification" and p.attempt >= 2]
        if pending:
            break
        assert time.monotonic() < deadline, "no retried delivery to the dead channel"
        await asyncio.sleep(0.2)
    assert "503" in pending[0].last_failure.message
    await handle.terminate("test done: the dead channel's deliveries would retry for 2 minutes")


@given(counts=st.dictionaries(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=10_000),
                              max_size=200),
       status=st.sampled_from(list(PlanStatus)), reason=st.text(max_size=5000))
def test_a_plans_notification_always_fits_and_ranks_its_end(counts: dict[str, int], status: PlanStatus,
                                                          reason: str) -> None:
    now = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)
    view = PlanView(plan_id="p-1", customer_ids=["acme", "globex"], requested_by="alice", strategy=Strategy.PARALLEL,
                    rate=RateControl(), total=sum(counts.values()), waves=[], counts=counts, status=status,
                    reason=reason, started_at=now, updated_at=now)
    finished = plan_notification(view, NotificationEvent.PLAN_FINISHED, 2, now)
    assert finished.dedup_key == "p-1:plan_finished:2" and finished.customer_id is None  # several customers
    assert finished.severity is FINISHED_SEVERITY.get(status, Severity.INFO)
    assert finished.reason is not None and len(finished.reason) <= 4000
    paused = plan_notification(view, NotificationEvent.PLAN_PAUSED, 0, now)
    assert paused.severity is Severity.WARNING and paused.verified_monthly_savings is None
    filled = LINKS.fill(finished)
    assert filled.links.report == "https://reclaim.example.com/api/v1/plans/p-1/report?format=md"
    assert LINKS.fill(paused).links.report is None and LINKS.fill(paused).links.approval_page is None
