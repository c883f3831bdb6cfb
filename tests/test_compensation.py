"""Failures after the first mutation are compensated back to the original state (asserted on moto)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.faults import FaultInjector, FaultRule
from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import activity_names, attempts_of, recommendation, request

DONE = frozenset({S.COMPLETED, S.ROLLED_BACK, S.ROLLBACK_FAILED, S.FAILED, S.REJECTED_BY_VALIDATION})


class _BeforeVerify(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, hook: Callable[[], None]) -> None:
        super().__init__(next)
        self.hook = hook

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().activity_type == "verify":
            self.hook()
        return await self.next.execute_activity(input)


class BeforeVerify(Interceptor):
    """Runs `hook` in the worker just before each verify attempt: a disturbance from outside."""

    def __init__(self) -> None:
        self.hook: Callable[[], None] = lambda: None

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BeforeVerify(next, lambda: self.hook())


@pytest.fixture
def before_verify() -> BeforeVerify:
    return BeforeVerify()


@pytest.fixture
def interceptors(before_verify: BeforeVerify) -> list[Interceptor]:
    return [before_verify]


async def run_to_end(stack: Stack, rec: Any, **options: Any) -> Any:
    started = await stack.executions.start(request(rec, **options))
    view = await stack.executions.wait(started.execution_id)
    if view.status is S.AWAITING_APPROVAL:
        await stack.executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
        view = await stack.executions.wait(started.execution_id, until=DONE)
    return view


def _fail_verify() -> None:
    raise ApplicationError("resource did not settle (injected)", type="VerificationFailed", non_retryable=True)


async def test_stop_verify_failure_restarts_the_instance(
    stack: Stack, aws: AwsAccount, before_verify: BeforeVerify
) -> None:
    instance = aws.instance("m5.large")
    before_verify.hook = _fail_verify
    view = await run_to_end(stack, recommendation("ec2.stop", instance))
    assert view.status is S.ROLLED_BACK
    assert "VerificationFailed" in (view.reason or "")
    assert aws.instance_state(instance) == ("running", "m5.large")


async def test_someone_starting_the_instance_fails_verification_for_real(
    stack: Stack, aws: AwsAccount, before_verify: BeforeVerify
) -> None:
    """No injected error: another actor restarts the instance and the real verify notices."""
    instance = aws.instance("m5.large")
    before_verify.hook = lambda: aws.ec2.start_instances(InstanceIds=[instance]) and None
    view = await run_to_end(stack, recommendation("ec2.stop", instance))
    assert view.status is S.ROLLED_BACK
    assert "expected stopped" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"


async def test_rightsize_verify_failure_restores_type_and_running(
    stack: Stack, aws: AwsAccount, before_verify: BeforeVerify
) -> None:
    instance = aws.instance("m5.2xlarge")
    before_verify.hook = _fail_verify
    rec = recommendation("ec2.rightsize", instance,
                         {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"})
    view = await run_to_end(stack, rec)
    assert view.status is S.ROLLED_BACK
    assert aws.instance_state(instance) == ("running", "m5.2xlarge")


async def test_delete_verify_failure_restores_the_volume_from_its_one_snapshot(
    stack: Stack, aws: AwsAccount, before_verify: BeforeVerify
) -> None:
    volume = aws.volume(size=40, volume_type="gp3", tags={"Name": "cache", "team": "data"})
    original = aws.volumes()[volume]
    before_verify.hook = _fail_verify
    view = await run_to_end(stack, recommendation("ebs.delete", volume, {"expected_size_gib": 40}))
    assert view.status is S.ROLLED_BACK
    volumes = aws.volumes()
    assert volume not in volumes  # deleted, then restored as a new volume
    restored = [v for v in volumes.values()
                if {"Key": "reclaim:restored-for", "Value": view.execution_id} in v.get("Tags", [])]
    assert len(restored) == 1
    new = restored[0]
    assert (new["Size"], new["VolumeType"], new["AvailabilityZone"]) == (
        original["Size"], original["VolumeType"], original["AvailabilityZone"])
    assert {"Key": "Name", "Value": "cache"} in new["Tags"] and {"Key": "team", "Value": "data"} in new["Tags"]
    assert len(aws.snapshots_for(view.execution_id)) == 1


async def test_gp3_verify_failure_restores_gp2(stack: Stack, aws: AwsAccount, before_verify: BeforeVerify) -> None:
    volume = aws.volume(size=200, volume_type="gp2")
    before_verify.hook = _fail_verify
    view = await run_to_end(stack, recommendation("ebs.gp2_to_gp3", volume))
    assert view.status is S.ROLLED_BACK
    assert aws.volumes()[volume]["VolumeType"] == "gp2"


async def test_unhealable_aws_error_ends_with_its_code_and_is_compensated(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    instance = aws.instance("c5.2xlarge")
    faults.rules.append(FaultRule("StartInstances", "InsufficientInstanceCapacity", resource=instance, times=1))
    rec = recommendation("ec2.rightsize", instance,
                         {"expected_instance_type": "c5.2xlarge", "target_instance_type": "c5.large"})
    view = await run_to_end(stack, rec)
    assert view.status is S.ROLLED_BACK
    assert "InsufficientInstanceCapacity" in (view.reason or "")
    assert aws.instance_state(instance) == ("running", "c5.2xlarge")
    history = await stack.executions.handle(view.execution_id).fetch_history()
    failures = [e.activity_task_failed_event_attributes.failure for e in history.events
                if e.HasField("activity_task_failed_event_attributes")]
    assert [(f.application_failure_info.type, f.application_failure_info.non_retryable) for f in failures] == [
        ("InsufficientInstanceCapacity", True)
    ]
    assert faults.rules[0].fired == 1  # the capacity error was not retried
    assert activity_names(history).count("revert") == 1


async def test_throttling_is_retried_with_backoff_and_completes(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    """Two layers, as with real throttling: botocore retries the request itself (4 sends in all),
    then Temporal retries the activity; the fifth throttled send is the second attempt's first."""
    instance = aws.instance()
    faults.rules.append(FaultRule("StopInstances", "RequestLimitExceeded", resource=instance, times=5))
    view = await run_to_end(stack, recommendation("ec2.stop", instance))
    assert view.status is S.COMPLETED
    assert aws.instance_state(instance)[0] == "stopped"
    assert faults.rules[0].fired == 5
    assert faults.calls["StopInstances"] == 6  # 5 answered by the fault, 1 by AWS
    history = await stack.executions.handle(view.execution_id).fetch_history()
    assert attempts_of(history, "apply") == [2]


async def test_a_short_throttling_streak_is_absorbed_by_botocore(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    instance = aws.instance()
    faults.rules.append(FaultRule("StopInstances", "Throttling", resource=instance, times=2))
    view = await run_to_end(stack, recommendation("ec2.stop", instance))
    assert view.status is S.COMPLETED
    assert faults.rules[0].fired == 2
    history = await stack.executions.handle(view.execution_id).fetch_history()
    assert attempts_of(history, "apply") == [1]


async def test_denied_permission_in_dry_run_is_reported(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    instance = aws.instance()
    faults.rules.append(FaultRule("StopInstances", "UnauthorizedOperation", resource=instance))
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), dry_run=True))
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.REJECTED_BY_VALIDATION
    assert "no permission" in (view.reason or "")
    assert aws.instance_state(instance)[0] == "running"
