"""A DRS drill whose launch outlasts the workflow's mutation deadline (30 min), on the time-skipping
server: the job stays PENDING, then STARTED, for 45 minutes of workflow time. Since TIMING_LAUNCHES
the kind's own apply deadline (6 h) holds the wait: each apply call polls for its attempt and hands
its "not yet" back, and the workflow asks again after a durable timer (skipped by the test server)."""

from __future__ import annotations

import contextlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest
from domain.policy import Role
from domain.recovery import launch_window
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.conftest import ACCOUNT, REGION, AwsAccount
from tests.drs_fake import FakeDrs, server_clock, server_id
from tests.helpers import recommendation
from worker import build_worker
from workflows.execution import ExecutionWorkflow
from workflows.options import MUTATE_DEADLINE


async def test_a_launch_longer_than_the_mutation_deadline_completes(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor,
) -> None:
    sid = server_id()
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), launch=lambda s: aws.instance("t3.micro"),
                   terminate=lambda iid: aws.ec2.terminate_instances(InstanceIds=[iid]), clock=server_clock)
    fake.add_server(sid, {"app": "ledger"})
    fake.pending_for, fake.launch_after[sid] = timedelta(minutes=5), timedelta(minutes=45)
    fake.activate()
    try:
        rec = recommendation("drs.drill", sid, {"source_server_ids": [sid], "poll_interval_seconds": 60}, savings=0)
        # A 10 s step: a call looks once (its budget is shorter than the poll interval) and hands
        # back; the workflow's timers (a minute each) poll for the 45 minutes.
        options = ExecutionOptions(step_timeout=timedelta(seconds=10), rollback_window=timedelta(0))
        queue = f"drill-{uuid.uuid4()}"
        async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                                executor=activity_executor, max_concurrent_activities=16):
            executions = Executions(skipping_env.client, queue)
            eid = (await executions.start(ExecutionRequest(recommendation=rec, requested_by="alice",
                                                           options=options))).execution_id
            waiting = await executions.wait(eid)
            assert waiting.status is S.AWAITING_APPROVAL, waiting.reason  # a drill is never auto-approved
            await executions.decide(eid, True, ApprovalInput(actor="bob", role=Role.APPROVER))
            await skipping_env.sleep(timedelta(minutes=50))  # the server skips from timer to timer
            view = await executions.handle(eid).result()
    finally:
        fake.deactivate()

    assert view.status is S.COMPLETED, view.reason
    window = launch_window([e.model_dump(mode="json") for e in view.log])
    assert window is not None
    took = window[1] - window[0]
    assert took > MUTATE_DEADLINE and timedelta(minutes=45) <= took < timedelta(minutes=47), took
    # The server's own launch instant is kept in the view (the plan report's per-server figure).
    assert set(view.launches) == {sid}
    assert timedelta(minutes=45) <= view.launches[sid] - window[0] <= took
    assert fake.count("StartRecovery") == 1  # every retried attempt adopted its own job
    assert fake.count("DescribeJobs") > 45  # it kept looking through PENDING and STARTED
    assert fake.count("TerminateRecoveryInstances") == 1 and not fake.recovery  # the drill cleaned up


async def test_a_launch_past_the_kinds_own_deadline_fails_and_terminates_what_it_launched(
    skipping_env: WorkflowEnvironment, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor,
) -> None:
    """The wait is bounded still: a job that has launched nothing 6 hours on fails the item, and the
    undo waits for the job to end, then terminates exactly what it launched."""
    sid = server_id()
    fake = FakeDrs(sessions.client(ACCOUNT, REGION, "drs"), launch=lambda s: aws.instance("t3.micro"),
                   terminate=lambda iid: aws.ec2.terminate_instances(InstanceIds=[iid]), clock=server_clock)
    fake.add_server(sid, {"app": "ledger"})
    fake.launch_after[sid] = timedelta(hours=6, minutes=20)
    fake.activate()
    try:
        rec = recommendation("drs.drill", sid, {"source_server_ids": [sid], "poll_interval_seconds": 300}, savings=0)
        options = ExecutionOptions(step_timeout=timedelta(seconds=10), rollback_window=timedelta(0))
        queue = f"drill-{uuid.uuid4()}"
        async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                                executor=activity_executor, max_concurrent_activities=16):
            executions = Executions(skipping_env.client, queue)
            eid = (await executions.start(ExecutionRequest(recommendation=rec, requested_by="alice",
                                                           options=options))).execution_id
            await executions.wait(eid)
            await executions.decide(eid, True, ApprovalInput(actor="bob", role=Role.APPROVER))
            await skipping_env.sleep(timedelta(hours=7))
            with contextlib.suppress(WorkflowFailureError):
                await executions.handle(eid).result()
            view = await executions.handle(eid).query(ExecutionWorkflow.status)
    finally:
        fake.deactivate()

    assert view.status is S.ROLLED_BACK, (view.status, view.reason)
    assert "apply deadline (6:00:00)" in (view.reason or ""), view.reason
    window = launch_window([e.model_dump(mode="json") for e in view.log])
    assert window is not None and window[1] is None  # it never got past applying
    assert fake.count("StartRecovery") == 1
    assert fake.count("TerminateRecoveryInstances") == 1 and not fake.recovery
