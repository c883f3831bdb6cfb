"""Executions tell people: the notify file's channels hear of an approval request, a decision and
the outcome, on the real dev server; a channel that refuses never holds up the change."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest_asyncio
from temporalio.client import Client

from activities.aws import SessionFactory
from activities.notify.delivery import NotifyActivities
from activities.notify.signature import HEADER, verify_signature
from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import activity_names, recommendation, request
from tests.notify_support import HttpReceiver, catch_all_notify_file
from worker import build_worker

SECRET_ENV = "RECLAIM_TEST_WEBHOOK_SECRET"



@pytest_asyncio.fixture
async def told(client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount, tmp_path: Path,
               activity_executor: ThreadPoolExecutor, receiver: HttpReceiver) -> AsyncIterator[Executions]:
    """A worker whose notify file sends everything to `receiver`."""
    task_queue = f"told-{uuid.uuid4()}"
    notify = NotifyActivities.from_path(catch_all_notify_file(tmp_path, receiver.url, SECRET_ENV))
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store, executor=activity_executor,
                          max_concurrent_activities=16, notify=notify)
    async with worker:
        yield Executions(client, task_queue)


async def _events(receiver: HttpReceiver, want: list[str], timeout: float = 30.0) -> list[dict[str, object]]:
    """The bodies received, once `want`'s events have all arrived (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = [json.loads(r.body) for r in receiver.requests]
        if set(want) <= {b["event"] for b in bodies}:
            return bodies
        assert time.monotonic() < deadline, f"got {[b['event'] for b in bodies]}, waiting for {want}"
        await asyncio.sleep(0.05)


async def test_people_hear_of_an_approval_request_the_decision_and_the_outcome(
    told: Executions, aws: AwsAccount, receiver: HttpReceiver
) -> None:
    volume = aws.volume(size=30)
    started = await told.start(request(recommendation("ebs.delete", volume, {"expected_size_gib": 30}),
                                       rollback_window=timedelta(0)))
    view = await told.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL}), timeout=60)
    asked_at = time.monotonic()
    (body,) = await _events(receiver, ["approval_requested"])
    # Told at once, not at the end: the request reached the receiver while the execution waits.
    assert time.monotonic() - asked_at < 10
    asked = body["notification"]
    assert isinstance(asked, dict) and asked["subject_id"] == started.execution_id and asked["resource_id"] == volume
    assert asked["risk"] == view.risk.value and asked["planned_steps"], asked
    assert body["dedup_key"] == f"{started.execution_id}:approval_requested:0"
    signed = receiver.requests[0]
    assert verify_signature("test-webhook-secret", signed.headers[HEADER], signed.body, time.time())
    assert not verify_signature("test-webhook-secret", signed.headers[HEADER], signed.body + b" ", time.time())

    await told.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    assert (await told.wait(started.execution_id, timeout=60)).status is S.COMPLETED
    bodies = await _events(receiver, ["approval_requested", "approved", "completed"])
    assert [b["event"] for b in bodies] == ["approval_requested", "approved", "completed"]
    assert all("test-webhook-secret" not in r.body.decode() for r in receiver.requests)


async def test_a_channel_that_refuses_never_holds_up_the_change(
    told: Executions, aws: AwsAccount, receiver: HttpReceiver
) -> None:
    receiver.status = 400  # the channel refuses every message: a permanent failure
    instance = aws.instance()
    started = await told.start(request(recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}),
                                       auto_approve=True, rollback_window=timedelta(0)))
    # Closed, not only COMPLETED: a run drains its deliveries before it closes, so by then the
    # refused one is in the history and the receiver has had it.
    view = await asyncio.wait_for(told.handle(started.execution_id).result(), 60)
    assert view.status is S.COMPLETED and aws.instance_state(instance)[0] == "stopped"
    history = await told.handle(started.execution_id).fetch_history()
    assert "deliver_notification" in activity_names(history)  # tried, failed, reported in the history
    assert [json.loads(r.body)["event"] for r in receiver.requests] == ["completed"]
