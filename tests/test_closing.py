"""Every way out of an execution ends in a status a person can read (issue: "Every way out ...").

Each test here failed on the main of 2026-12-01: an error outside the change left the
execution VALIDATING for ever; a failed undo after a cancel closed as CANCELED; a
submitter's understated savings slipped a large change past a human; a rollback asked
while the resource was busy was accepted and dropped; the Web UI showed no summary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from temporalio import activity
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.faults import FaultInjector, FaultRule
from domain.execution import ApprovalInput, RollbackInput, lease_id_for
from domain.policy import Role
from domain.status import ExecutionStatus as S
from tests.conftest import ACCOUNT, REGION, AwsAccount, Stack
from tests.helpers import eventually, recommendation, request
from workflows.lease import LeaseInput, ResourceLeaseWorkflow
from workflows.outcomes import child_outcome

CLOSE_TIMEOUT = 120.0  # s; every step here is a few moto calls: bounded far above a loaded machine's pace


class _HoldVerify(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().activity_type == "verify":
            raise ApplicationError("still settling (held by the test)", type="InProgress")
        return await self.next.execute_activity(input)


class HoldVerify(Interceptor):
    """Verify never sees the target state: the execution stays VERIFYING until cancelled."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HoldVerify(next)


async def closed(stack: Stack, execution_id: str) -> Any:
    """Wait (bounded) until Temporal has closed the execution; its description."""
    handle = stack.executions.handle(execution_id)
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while True:
        description = await handle.describe()
        if description.status not in (None, WorkflowExecutionStatus.RUNNING):
            return description
        assert time.monotonic() < deadline, f"{execution_id} still open after {CLOSE_TIMEOUT} s"
        await asyncio.sleep(0.2)


async def failure_type(stack: Stack, execution_id: str) -> str:
    try:
        await stack.executions.handle(execution_id).result()
    except WorkflowFailureError as err:
        assert isinstance(err.cause, ApplicationError)
        return err.cause.type or ""
    raise AssertionError("the execution did not fail")


async def test_access_denied_while_validating_ends_failed_with_the_code(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    instance = aws.instance()
    faults.rules.append(FaultRule("DescribeInstances", "UnauthorizedOperation", resource=instance))
    started = await stack.executions.start(request(recommendation("ec2.stop", instance)))
    description = await closed(stack, started.execution_id)
    assert description.status is WorkflowExecutionStatus.FAILED
    assert await failure_type(stack, started.execution_id) == "ExecutionFailed"
    view = await stack.executions.status(started.execution_id)
    assert view.status is S.FAILED
    assert "UnauthorizedOperation" in (view.reason or "")
    assert view.finished_at is not None

    async def stored_failed() -> bool:
        row = await stack.store.get_execution(started.execution_id)
        return row is not None and row.status is S.FAILED and "UnauthorizedOperation" in (row.reason or "")

    await eventually(stored_failed)
    assert aws.instance_state(instance)[0] == "running"


async def test_a_failed_undo_after_a_cancel_fails_the_workflow(
    client: Any, sessions: Any, store: Any, aws: AwsAccount, faults: FaultInjector, activity_executor: Any,
) -> None:
    import uuid

    from starter.executions import Executions
    from worker import build_worker

    task_queue = f"tq-{uuid.uuid4()}"
    worker = build_worker(client, task_queue=task_queue, sessions=sessions, store=store,
                          executor=activity_executor, interceptors=[HoldVerify()], max_concurrent_activities=8)
    async with worker:
        stack = Stack(client, task_queue, sessions, store)
        stack.executions = Executions(client, task_queue)
        instance = aws.instance()
        faults.rules.append(FaultRule("StartInstances", "UnauthorizedOperation", resource=instance))
        started = await stack.executions.start(request(recommendation("ec2.stop", instance)))
        await stack.executions.wait(started.execution_id, until=frozenset({S.VERIFYING}), timeout=CLOSE_TIMEOUT)
        await stack.executions.handle(started.execution_id).cancel()
        description = await closed(stack, started.execution_id)
        assert description.status is WorkflowExecutionStatus.FAILED
        assert await failure_type(stack, started.execution_id) == "RollbackFailed"
        view = await stack.executions.status(started.execution_id)
        assert view.status is S.ROLLBACK_FAILED
        assert "UnauthorizedOperation" in (view.reason or "")
        assert aws.instance_state(instance)[0] == "stopped"  # the undo really failed: the alarm is right


async def test_a_change_undone_after_a_failure_closes_failed_and_one_undone_on_request_completed(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    flaky = aws.instance("c5.2xlarge")
    faults.rules.append(FaultRule("StartInstances", "InsufficientInstanceCapacity", resource=flaky, times=1))
    failed = await stack.executions.start(request(
        recommendation("ec2.rightsize", flaky, {"expected_instance_type": "c5.2xlarge",
                                                "target_instance_type": "c5.large"}), auto_approve=True))
    view = await stack.executions.wait(failed.execution_id)
    if view.status is S.AWAITING_APPROVAL:
        await stack.executions.decide(failed.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    await closed(stack, failed.execution_id)
    assert await failure_type(stack, failed.execution_id) == "ChangeRolledBack"
    assert (await stack.executions.status(failed.execution_id)).status is S.ROLLED_BACK

    volume = aws.volume(100, "gp2")
    asked = await stack.executions.start(request(recommendation("ebs.gp2_to_gp3", volume)))
    await stack.executions.wait(asked.execution_id, until=frozenset({S.COMPLETED}), timeout=CLOSE_TIMEOUT)
    await stack.executions.rollback(asked.execution_id, RollbackInput(actor="carol", reason="latency"))
    description = await closed(stack, asked.execution_id)
    assert description.status is WorkflowExecutionStatus.COMPLETED
    assert (await stack.executions.status(asked.execution_id)).status is S.ROLLED_BACK


async def test_an_understated_savings_figure_does_not_skip_the_human(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance("m5.12xlarge")  # ~$1,682/month running: far above the $500 auto-approval line
    started = await stack.executions.start(request(recommendation("ec2.stop", instance, savings=1.0)))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.AWAITING_APPROVAL
    assert "savings exceed the auto-approval threshold" in view.approval_reasons
    note = next(r for r in view.approval_reasons if r.startswith("savings: submitted"))
    assert "$1.00/month" in note and "ec2.stop estimates $1," in note
    assert aws.instance_state(instance)[0] == "running"
    await stack.executions.cancel(started.execution_id)


async def test_a_rollback_asked_while_the_resource_is_busy_is_carried_out_once_it_is_free(
    stack: Stack, aws: AwsAccount
) -> None:
    volume = aws.volume(100, "gp2")
    started = await stack.executions.start(request(recommendation("ebs.gp2_to_gp3", volume)))
    await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}), timeout=CLOSE_TIMEOUT)
    # Another holder takes the resource's lease, as a second execution changing it would.
    lease = await stack.client.start_workflow(
        ResourceLeaseWorkflow.run, LeaseInput(holder="exec-other"),
        id=lease_id_for(ACCOUNT, REGION, volume), task_queue=stack.task_queue)
    answer = await stack.executions.rollback(started.execution_id, RollbackInput(actor="carol", reason="latency"))
    assert "accepted" in answer and "as soon as" in answer
    view = await stack.executions.status(started.execution_id)
    assert view.status is S.COMPLETED
    assert aws.volumes()[volume]["VolumeType"] == "gp3"
    await lease.signal(ResourceLeaseWorkflow.release)
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED}),
                                       timeout=CLOSE_TIMEOUT)
    assert view.status is S.ROLLED_BACK
    assert aws.volumes()[volume]["VolumeType"] == "gp2"


async def test_refusals_are_typed_and_final_and_say_what_is_true(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)
    handle = stack.executions.handle(started.execution_id)
    from workflows.execution import ExecutionWorkflow

    try:
        await handle.execute_update(ExecutionWorkflow.approve_update, ApprovalInput(actor="alice", role=Role.APPROVER))
        raise AssertionError("self-approval was accepted")
    except WorkflowUpdateFailedError as err:
        assert isinstance(err.cause, ApplicationError)
        assert (err.cause.type, err.cause.non_retryable) == ("Refused", True)
    await handle.execute_update(ExecutionWorkflow.approve_update, ApprovalInput(actor="bob", role=Role.APPROVER))
    try:
        await handle.execute_update(ExecutionWorkflow.approve_update, ApprovalInput(actor="dave", role=Role.APPROVER))
        raise AssertionError("a second approval was accepted")
    except WorkflowUpdateFailedError as err:
        assert isinstance(err.cause, ApplicationError)
        assert err.cause.message == "already approved by bob"


async def test_the_web_ui_shows_a_summary_and_how_to_approve(stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    rec = recommendation("ec2.stop", instance, savings=42.0)
    started = await stack.executions.start(request(rec, auto_approve=False))
    await stack.executions.wait(started.execution_id)
    handle = stack.executions.handle(started.execution_id)
    description = await handle.describe()
    summary = await description.static_summary()
    assert summary is not None and "ec2.stop" in summary and instance in summary and "$42.00/month" in summary
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert "AWAITING_APPROVAL" in details
    assert f"reclaim approve {started.execution_id}" in details
    assert f"/api/v1/executions/{started.execution_id}/approve" in details
    assert f"--workflow-id {started.execution_id} --name approve" in details
    await stack.executions.cancel(started.execution_id)


async def test_the_web_ui_tells_a_change_in_its_rollback_window_from_one_awaiting_approval(
    stack: Stack, aws: AwsAccount
) -> None:
    """Both are RUNNING to Temporal: the details say which, and how to undo the one that stands."""
    volume = aws.volume(100, "gp2")
    started = await stack.executions.start(request(recommendation("ebs.gp2_to_gp3", volume, savings=3.0)))
    await stack.executions.wait(started.execution_id, until=frozenset({S.COMPLETED}), timeout=CLOSE_TIMEOUT)
    handle = stack.executions.handle(started.execution_id)
    assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
    summary = await (await handle.describe()).static_summary()
    assert summary is not None and f"ebs.gp2_to_gp3 {volume}" in summary and "$3.00/month" in summary

    async def details() -> str:
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        return str(metadata.current_details)

    async def says_completed() -> bool:
        """the details have caught up with COMPLETED"""
        return "**COMPLETED**" in await details()

    await eventually(says_completed)
    shown = await details()
    assert "Can be rolled back until" in shown and f"reclaim rollback {started.execution_id}" in shown
    assert "Approve with one of" not in shown
    await stack.executions.rollback(started.execution_id, RollbackInput(actor="carol", reason="done looking"))


def child_error(cause: BaseException) -> ChildWorkflowError:
    error = ChildWorkflowError("child workflow execution failed", namespace="default", workflow_id="exec-x",
                               run_id="r", workflow_type="ExecutionWorkflow", initiated_event_id=1,
                               started_event_id=2, retry_state=None)
    error.__cause__ = cause
    return error


def test_a_child_outcome_is_decided_by_type_not_text() -> None:
    assert child_outcome(child_error(ApplicationError("the apply was cancelled by AWS", type="Boom"))) is S.FAILED
    assert child_outcome(child_error(CancelledError("cancelled"))) is S.CANCELLED
    assert child_outcome(asyncio.CancelledError()) is S.CANCELLED
    assert child_outcome(child_error(ApplicationError("rollback failed: cancelled; revert failed",
                                                      type="RollbackFailed"))) is S.ROLLBACK_FAILED
    assert child_outcome(child_error(ApplicationError("undone", type="ChangeRolledBack"))) is S.ROLLED_BACK
