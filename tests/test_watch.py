"""The watch after a change (generation-2026-12-05-ahead): a rightsize's metrics before and after,
watched in the rollback window after COMPLETED, on the time-skipping server with the metrics written to moto's CloudWatch (`put_metric_data`).
A healthy bake completes; a CPU regression undoes the change with the numbers in the reason; a
metric with no data after the change is said, and undoes nothing."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import boto3
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.aws import SessionFactory
from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest, ExecutionView
from domain.policy import Role
from domain.status import ExecutionStatus as S
from domain.watch import EC2_WORKLOAD, LAMBDA_WORKLOAD, RDS_WORKLOAD, MetricValues, WatchedMetric, judge
from starter.executions import Executions
from store.repository import Store
from tests.conftest import REGION, AwsAccount
from tests.helpers import recommendation
from worker import build_worker

CPU = "AWS/EC2/CPUUtilization"


@pytest_asyncio.fixture(loop_scope="session")
async def watching(skipping_env: WorkflowEnvironment, sessions: SessionFactory, store: Store,
                   activity_executor: ThreadPoolExecutor) -> AsyncIterator[Executions]:
    queue = f"watch-{uuid.uuid4()}"
    async with build_worker(skipping_env.client, task_queue=queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=16):
        yield Executions(skipping_env.client, queue)


def cpu(aws: AwsAccount, instance: str, at: datetime, minutes: range, value: float) -> None:
    """CPUUtilization points of `instance`, `minutes` from `at` (negative: before it)."""
    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws.endpoint, region_name=REGION)
    cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=[{
        "MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance}],
        "Timestamp": at + timedelta(minutes=m), "Value": value} for m in minutes])


async def rightsize(env: WorkflowEnvironment, executions: Executions, aws: AwsAccount, instance: str) -> ExecutionView:
    rec = recommendation("ec2.rightsize", instance,
                         {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"})
    started = await executions.start(ExecutionRequest(recommendation=rec, requested_by="alice",
                                                      options=ExecutionOptions(rollback_window=timedelta(hours=2))))
    await executions.wait(started.execution_id, until=frozenset({S.AWAITING_APPROVAL}))
    await executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
    await executions.wait(started.execution_id, until=frozenset({S.COMPLETED}))  # then the bake (1 h) begins
    await env.sleep(timedelta(hours=2, minutes=5))  # the bake, then the rest of the rollback window
    with contextlib.suppress(WorkflowFailureError):  # a change undone after a failure fails its run
        await executions.handle(started.execution_id).result()
    return await executions.status(started.execution_id)


async def test_a_healthy_bake_completes_after_six_looks(
    skipping_env: WorkflowEnvironment, watching: Executions, aws: AwsAccount,
) -> None:
    instance, now = aws.instance("m5.2xlarge"), await skipping_env.get_current_time()
    cpu(aws, instance, now, range(-170, 0, 10), 30.0)
    cpu(aws, instance, now, range(1, 80, 2), 36.0)  # busier on a smaller type, within 1.5x
    view = await rightsize(skipping_env, watching, aws, instance)
    assert view.status is S.COMPLETED
    looks = [e.message for e in view.log if e.message.startswith("watch ")]
    assert len(looks) == 6 and all("CPUUtilization 36 (baseline 30)" in m for m in looks)
    assert any(e.message == "watched for 1:00:00: no regression" for e in view.log)
    assert any(e.message.startswith("baseline: CPUUtilization 30") for e in view.log)
    assert aws.describe_instance(instance)["InstanceType"] == "m5.large"


async def test_a_cpu_regression_undoes_the_rightsize_with_the_evidence(
    skipping_env: WorkflowEnvironment, watching: Executions, aws: AwsAccount,
) -> None:
    instance, now = aws.instance("m5.2xlarge"), await skipping_env.get_current_time()
    cpu(aws, instance, now, range(-170, 0, 10), 30.0)
    cpu(aws, instance, now, range(1, 80, 2), 95.0)
    view = await rightsize(skipping_env, watching, aws, instance)
    assert view.status is S.ROLLED_BACK
    assert "the watch saw a regression: CPUUtilization 95 is over its limit 60 (baseline 30" in (view.reason or "")
    assert aws.describe_instance(instance)["InstanceType"] == "m5.2xlarge"  # put back


async def test_a_metric_with_no_data_after_the_change_is_said_and_undoes_nothing(
    skipping_env: WorkflowEnvironment, watching: Executions, aws: AwsAccount,
) -> None:
    instance, now = aws.instance("m5.2xlarge"), await skipping_env.get_current_time()
    cpu(aws, instance, now, range(-170, 0, 10), 30.0)  # a baseline, then silence
    view = await rightsize(skipping_env, watching, aws, instance)
    assert view.status is S.COMPLETED
    looks = [e.message for e in view.log if e.message.startswith("watch ")]
    assert looks and all("no data for AWS/EC2/CPUUtilization" in m for m in looks)
    assert aws.describe_instance(instance)["InstanceType"] == "m5.large"


def test_a_stop_is_not_watched_and_every_rightsize_is() -> None:
    from activities.actions.base import action_class

    assert action_class("ec2.stop").traits().watch_period == timedelta(0)
    for kind in ("ec2.rightsize", "rds.rightsize", "asg.rightsize", "lambda.memory", "dynamodb.billing_mode"):
        traits, kind_class = action_class(kind).traits(), action_class(kind)
        assert traits.watch_period == timedelta(hours=1) and kind_class.watched, kind


# ---- what a regression is (pure) ---------------------------------------------------------------

metrics_st = st.sampled_from([*EC2_WORKLOAD, *RDS_WORKLOAD, *LAMBDA_WORKLOAD])
value_st = st.floats(min_value=0, max_value=1e9, allow_nan=False)
T = datetime(2026, 12, 5)


def values(metric: WatchedMetric, value: float | None) -> MetricValues:
    return MetricValues(start=T, end=T, values={metric.key: value})


@settings(max_examples=100, deadline=None)
@given(metrics_st, value_st)
def test_the_same_value_as_before_never_regresses_and_silence_never_does(metric: WatchedMetric, value: float) -> None:
    assert not judge([metric], values(metric, value), values(metric, value)).regressed
    silent = judge([metric], values(metric, value), values(metric, None))
    assert not silent.regressed and silent.missing == [metric.key]


@settings(max_examples=100, deadline=None)
@given(metrics_st, st.one_of(st.none(), value_st), value_st, value_st)
def test_worse_is_monotonic(metric: WatchedMetric, before: float | None, a: float, b: float) -> None:
    """A value further in the metric's bad direction is never judged better."""
    better, worse = (min(a, b), max(a, b)) if metric.worse == "higher" else (max(a, b), min(a, b))
    if judge([metric], values(metric, before), values(metric, better)).regressed:
        assert judge([metric], values(metric, before), values(metric, worse)).regressed


@settings(max_examples=100, deadline=None)
@given(st.timedeltas(min_value=timedelta(microseconds=6), max_value=timedelta(days=7)))
def test_six_looks_evenly_over_the_bake_the_last_at_its_end(period: timedelta) -> None:
    from domain.watch import checks

    looks = checks(period)
    assert len(looks) == 6 and looks[-1] == period
    assert all(timedelta(0) < a < b for a, b in itertools.pairwise(looks))
