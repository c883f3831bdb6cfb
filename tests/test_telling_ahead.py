"""Telling ahead (generation-2026-12-05-ahead) on the time-skipping server: approvers reminded
at half and 90% of the approval timeout, owners warned at the lead time before a destructive
change's window, a failed undo's alarm repeated until someone acknowledges it, and the
recommender's own risk inputs in the score. What people were told is what a local webhook
receiver got, with the workflow time each message carries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from activities.notify.delivery import NotifyActivities
from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest, RollbackInput
from domain.notifications import Acknowledgement
from domain.policy import RiskLevel, Role
from domain.status import ExecutionStatus as S
from starter.executions import Executions, Refused
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation
from tests.notify_support import HttpReceiver, catch_all_notify_file
from worker import build_worker
from workflows.alarm import alarm_id


@pytest_asyncio.fixture(loop_scope="session")
async def told(skipping_env: WorkflowEnvironment, sessions: SessionFactory, store: Store, tmp_path: Path,
               activity_executor: ThreadPoolExecutor, receiver: HttpReceiver) -> AsyncIterator[Executions]:
    queue = f"ahead-{uuid.uuid4()}"
    notify = NotifyActivities.from_path(catch_all_notify_file(tmp_path, receiver.url))
    async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=16, notify=notify):
        yield Executions(skipping_env.client, queue)


def bodies(receiver: HttpReceiver) -> list[dict[str, Any]]:
    """The notifications the webhook received (its body wraps each in a versioned envelope)."""
    return [json.loads(r.body)["notification"] for r in receiver.requests]


async def received(receiver: HttpReceiver, event: str, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The `count` first messages of `event`, in the order they were sent (bounded wait: each is a
    local activity and one delivery activity, seconds at most on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        got = sorted((b for b in bodies(receiver) if b["event"] == event), key=lambda b: b["sequence"])
        if len(got) >= count:
            return got[:count]
        assert time.monotonic() < deadline, f"{len(got)} of {count} {event}; all: {[b['event'] for b in bodies(receiver)]}"
        await asyncio.sleep(0.05)


def at(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["at"])


async def test_approvers_are_reminded_at_half_and_ninety_percent_then_told_it_expired(
    skipping_env: WorkflowEnvironment, told: Executions, aws: AwsAccount, receiver: HttpReceiver,
) -> None:
    instance = aws.instance()
    started = await told.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", instance), requested_by="alice",
        options=ExecutionOptions(auto_approve=False, approval_timeout=timedelta(hours=10))))
    await told.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL}))
    (asked,) = await received(receiver, "approval_requested")
    await skipping_env.sleep(timedelta(hours=10, seconds=1))
    view = await told.handle(started.execution_id).result()
    assert view.status is S.EXPIRED
    first, second = await received(receiver, "approval_reminder", 2)
    assert (first["sequence"], second["sequence"]) == (0, 1)
    assert at(first) - at(asked) == pytest.approx(timedelta(hours=5), abs=timedelta(seconds=2))
    assert at(second) - at(asked) == pytest.approx(timedelta(hours=9), abs=timedelta(seconds=2))
    (expired,) = await received(receiver, "expired")
    assert at(expired) - at(asked) == pytest.approx(timedelta(hours=10), abs=timedelta(seconds=2))
    assert aws.instance_state(instance)[0] == "running"


async def test_a_decision_before_the_first_reminder_means_no_reminder(
    told: Executions, aws: AwsAccount, receiver: HttpReceiver,
) -> None:
    started = await told.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", aws.instance()), requested_by="alice",
        options=ExecutionOptions(auto_approve=False, rollback_window=timedelta(0))))
    await told.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL}))
    await told.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    assert (await told.handle(started.execution_id).result()).status is S.COMPLETED
    await received(receiver, "completed")
    assert "approval_reminder" not in {b["event"] for b in bodies(receiver)}


async def test_owners_are_warned_at_the_lead_time_before_a_volume_is_deleted(
    skipping_env: WorkflowEnvironment, told: Executions, aws: AwsAccount, receiver: HttpReceiver,
) -> None:
    volume = aws.volume(size=10, tags={"Owner": "dana@example.com"})
    window = await skipping_env.get_current_time() + timedelta(hours=30)
    started = await told.start(ExecutionRequest(
        recommendation=recommendation("ebs.delete", volume), requested_by="alice",
        options=ExecutionOptions(not_before=window, owner_warning_lead=timedelta(hours=6),
                                 rollback_window=timedelta(0))))
    view = await told.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL, S.SCHEDULED}))
    if view.status is S.AWAITING_APPROVAL:
        await told.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    await told.wait(started.execution_id, until=frozenset({S.SCHEDULED}))
    assert volume in aws.volumes()
    await skipping_env.sleep(timedelta(hours=30, seconds=1))
    final = await told.handle(started.execution_id).result()
    assert final.status is S.COMPLETED
    (warning,) = await received(receiver, "owner_warning")
    assert at(warning) == pytest.approx(window - timedelta(hours=6), abs=timedelta(seconds=2))
    assert datetime.fromisoformat(warning["not_before"]) == window
    assert warning["resource_id"] == volume and warning["resource_tags"]["Owner"] == "dana@example.com"
    assert volume not in aws.volumes()


async def test_a_stop_is_no_owner_warning(
    skipping_env: WorkflowEnvironment, told: Executions, aws: AwsAccount, receiver: HttpReceiver,
) -> None:
    window = await skipping_env.get_current_time() + timedelta(hours=2)
    started = await told.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", aws.instance()), requested_by="alice",
        options=ExecutionOptions(not_before=window, rollback_window=timedelta(0))))
    await told.wait(started.execution_id, until=frozenset({S.SCHEDULED}))
    await skipping_env.sleep(timedelta(hours=2, seconds=1))
    assert (await told.handle(started.execution_id).result()).status is S.COMPLETED
    await received(receiver, "completed")
    assert "owner_warning" not in {b["event"] for b in bodies(receiver)}


@pytest.fixture
def sessions(moto_endpoint: str, faults: FaultInjector) -> SessionFactory:
    return SessionFactory(endpoint_url=moto_endpoint, session_hooks=[faults.install])


async def test_a_failed_undo_rings_until_acknowledged_and_a_viewer_cannot_silence_it(
    skipping_env: WorkflowEnvironment, told: Executions, aws: AwsAccount, receiver: HttpReceiver,
    faults: FaultInjector,
) -> None:
    instance = aws.instance()
    started = await told.start(ExecutionRequest(
        recommendation=recommendation("ec2.stop", instance), requested_by="alice",
        options=ExecutionOptions(alarm_repeat=timedelta(hours=1))))
    await told.wait(started.execution_id, until=frozenset({S.COMPLETED}))
    faults.rules.append(FaultRule("StartInstances", "UnauthorizedOperation", resource=instance))
    await told.rollback(started.execution_id, RollbackInput(actor="carol", reason="the app broke"))
    handle = told.handle(started.execution_id)
    description = await _closed(handle)
    assert description.status is WorkflowExecutionStatus.FAILED  # Temporal's own alarm, at once
    (first,) = await received(receiver, "rollback_failed")
    assert first["severity"] == "critical" and "UnauthorizedOperation" in first["reason"]

    await skipping_env.sleep(timedelta(hours=2, minutes=1))
    again = await received(receiver, "rollback_failed", 3)
    assert [b["sequence"] for b in again] == [0, 1, 2]
    assert at(again[2]) - at(again[0]) == pytest.approx(timedelta(hours=2), abs=timedelta(seconds=2))

    with pytest.raises(Refused, match="viewer may not acknowledge"):
        await told.acknowledge(started.execution_id, Acknowledgement(actor="vic", role=Role.VIEWER))
    ack = await told.acknowledge(started.execution_id, Acknowledgement(actor="olga", role=Role.OPERATOR,
                                                                       comment="starting it by hand"))
    assert ack.actor == "olga"
    alarm = skipping_env.client.get_workflow_handle(alarm_id(started.execution_id))
    assert (await alarm.result())["actor"] == "olga"  # the alarm's run is over: nothing more is sent
    assert (await alarm.describe()).status is WorkflowExecutionStatus.COMPLETED
    assert aws.instance_state(instance)[0] == "stopped"


async def _closed(handle: Any) -> Any:
    deadline = time.monotonic() + 60
    while True:
        description = await handle.describe()
        if description.status is not WorkflowExecutionStatus.RUNNING:
            return description
        assert time.monotonic() < deadline, "the execution did not close"
        await asyncio.sleep(0.1)


async def test_the_recommenders_own_risk_inputs_raise_the_risk_and_ask_a_human(
    told: Executions, aws: AwsAccount,
) -> None:
    rec = recommendation("ec2.stop", aws.instance(), source="cost-optimization-hub", source_id="coh-1",
                         source_details={"rollbackPossible": False, "restartNeeded": True})
    started = await told.start(ExecutionRequest(recommendation=rec, requested_by="alice"))
    view = await told.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL, S.COMPLETED}))
    assert view.status is S.AWAITING_APPROVAL
    assert view.risk is RiskLevel.HIGH
    assert "cost-optimization-hub says the change cannot be rolled back" in view.risk_reasons
    assert "cost-optimization-hub says the change needs a restart" in view.risk_reasons
    await told.handle(started.execution_id).terminate("test over")

