"""The AWS budget: AWS's own buckets per account and region, spent before every request."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from activities.gateway.buckets import AWS_RATES, AwsBudget, bucket_of, is_mutating
from tests.conftest import ACCOUNT, REGION, AwsAccount


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def test_buckets_are_aws_buckets_not_operation_names() -> None:
    assert {bucket_of("ec2", op, {}) for op in ("StopInstances", "ModifyVolume", "ReleaseAddress",
                                                 "ModifyInstanceAttribute")} == {"ec2-mutating"}
    assert bucket_of("ec2", "CreateSnapshot", {}) == "ec2-CreateSnapshot"
    assert bucket_of("ec2", "DeleteVolume", {}) == "ec2-DeleteVolume"
    assert bucket_of("ec2", "StartInstances", {}) == "ec2-StartInstances"
    assert bucket_of("ec2", "CreateTags", {}) == "ec2-tags"
    assert bucket_of("ec2", "DescribeInstances", {"InstanceIds": ["i-1"]}) == "ec2-describe"
    assert bucket_of("ec2", "DescribeInstances", {}) == "ec2-describe-unfiltered"
    assert bucket_of("ec2", "DescribeSnapshots", {}) == "ec2-describe"
    assert bucket_of("rds", "ModifyDBInstance", {}) == "rds" == bucket_of("rds", "DescribeDBInstances", {})
    assert bucket_of("unknown-service", "DoThing", {}) == "other"
    assert not is_mutating("DescribeInstances") and is_mutating("StopInstances")


@settings(max_examples=100, deadline=None)
@given(bucket=st.sampled_from(sorted(AWS_RATES)), calls=st.integers(1, 400), workers=st.integers(1, 4))
def test_workers_sharing_an_account_never_overrun_its_bucket(bucket: str, calls: int, workers: int) -> None:
    """Each of `workers` workers takes 1/workers of the bucket; however their calls interleave,
    the calls granted by time t are at most AWS's capacity + refill * t, and nobody waits longer
    than their share demands."""
    clock = FakeClock()
    budgets = [AwsBudget(share=1 / workers, clock=clock, sleep=clock.sleep) for _ in range(workers)]
    granted: list[float] = []
    for n in range(calls):
        budgets[n % workers].acquire(ACCOUNT, REGION, bucket)
        granted.append(clock.now)
    rate = AWS_RATES[bucket]
    for index, at in enumerate(sorted(granted)):
        assert index + 1 <= rate.capacity + rate.refill_per_second * at + workers + 1e-6
    share_calls = -(-calls // workers)
    share = AwsBudget(share=1 / workers)._rate(bucket)
    assert clock.now <= workers * max(0.0, (share_calls - share.capacity) / share.refill_per_second) + 1e-6


def test_buckets_are_per_account_and_region() -> None:
    clock = FakeClock()
    budget = AwsBudget(clock=clock, sleep=clock.sleep)
    for account, region in [(ACCOUNT, REGION), (ACCOUNT, "eu-west-1"), ("210987654321", REGION)]:
        for _ in range(5):
            assert budget.acquire(account, region, "ec2-StartInstances") == 0.0
    assert clock.now == 0.0
    # That one alone is empty: AWS refills 2/s, the budget spends 95% of it (headroom for jitter).
    assert budget.acquire(ACCOUNT, REGION, "ec2-StartInstances") == pytest.approx(1 / (2 * 0.95))


def test_every_request_spends_its_bucket_and_a_throttle_empties_it(aws: AwsAccount) -> None:
    clock = FakeClock()
    budget = AwsBudget(clock=clock, sleep=clock.sleep)
    sessions = SessionFactory(endpoint_url=aws.endpoint, budget=budget, coalesce_window=0)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    instances = [aws.instance() for _ in range(3)]
    ec2.describe_instances(InstanceIds=instances)
    ec2.describe_instances()
    for instance in instances:
        ec2.stop_instances(InstanceIds=[instance])
    ec2.modify_volume(VolumeId=aws.volume(), VolumeType="gp3")
    assert budget.spent == {"ec2-describe": 1, "ec2-describe-unfiltered": 1, "ec2-mutating": 4}
    assert {aws.instance_state(i)[0] for i in instances} == {"stopped"}
    # AWS refuses one anyway (another tool spends the same account): the bucket is empty now,
    # so the next request waits for one refill (1/20 s) instead of a blind backoff.
    refuse_once = FaultInjector([FaultRule("DescribeVolumes", "RequestLimitExceeded", probability=1.0, times=1)])
    throttled = SessionFactory(endpoint_url=aws.endpoint, budget=budget, coalesce_window=0,
                               session_hooks=[refuse_once.install])
    throttled.client(ACCOUNT, REGION, "ec2").describe_volumes(VolumeIds=[aws.volume()])
    assert budget.waited_seconds >= 1 / 20 - 1e-9
