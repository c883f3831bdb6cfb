"""Default timeouts (24 h approval, 7-day rollback window) on the time-skipping test server."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.execution import ExecutionOptions, ExecutionRequest, ExecutionView
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation
from worker import build_worker


async def _run(env: WorkflowEnvironment, sessions: SessionFactory, store: Store,
               executor: ThreadPoolExecutor, req: ExecutionRequest, skip: timedelta) -> ExecutionView:
    """Start, let `skip` of workflow time pass in a moment, and return the final view."""
    queue = f"skip-{uuid.uuid4()}"
    async with build_worker(env.client, task_queue=queue, sessions=sessions, store=store, executor=executor,
                            max_concurrent_activities=16):
        executions = Executions(env.client, queue)
        started = await executions.start(req)
        await executions.wait(started.execution_id)  # parked: awaiting approval, or completed
        await env.sleep(skip)
        return await executions.handle(started.execution_id).result()


async def test_default_approval_timeout_of_24_hours_expires(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor,
) -> None:
    instance = aws.instance()
    req = ExecutionRequest(recommendation=recommendation("ec2.stop", instance), requested_by="alice",
                           options=ExecutionOptions(auto_approve=False))
    view = await _run(skipping_env, sessions, store, activity_executor, req, timedelta(hours=24, seconds=1))
    assert view.status is S.EXPIRED
    assert "1 day" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"


async def test_seven_day_rollback_window_ends_and_the_execution_closes(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor,
) -> None:
    volume = aws.volume(size=10, volume_type="gp2")
    rec = recommendation("ebs.gp2_to_gp3", volume)
    req = ExecutionRequest(recommendation=rec, requested_by="alice")
    view = await _run(skipping_env, sessions, store, activity_executor, req, timedelta(days=7, seconds=1))
    assert view.status is S.COMPLETED
    assert view.rollback_available_until is None
    assert any("rollback window ended" in e.message for e in view.log)
    assert view.log[-1].at - view.started_at >= timedelta(days=7)
    assert aws.volumes()[volume]["VolumeType"] == "gp3"
