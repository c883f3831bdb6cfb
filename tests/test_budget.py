"""The shared mutation budget: a token bucket per account, region and operation, spent by mutating calls only."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from activities.aws import SessionFactory
from activities.budget import MutationBudget, is_mutating
from tests.conftest import ACCOUNT, REGION, AwsAccount


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.5, 50), burst=st.integers(1, 60), calls=st.integers(1, 300))
def test_no_window_ever_exceeds_the_bucket(rate: float, burst: int, calls: int) -> None:
    """However many calls arrive at once, those granted by time t are at most burst + rate * t."""
    clock = FakeClock()
    budget = MutationBudget(rate_per_second=rate, burst=burst, clock=clock, sleep=clock.sleep)
    granted = []
    for _ in range(calls):
        budget.acquire(ACCOUNT, REGION, "StopInstances")
        granted.append(clock.now)
    for index, at in enumerate(granted):
        assert index + 1 <= burst + rate * at + 1e-6
    # Only as slow as it must be: the last call waited no longer than the bucket demands.
    assert granted[-1] <= max(0.0, (calls - burst) / rate) + 1e-6


def test_buckets_are_per_account_region_and_operation() -> None:
    clock = FakeClock()
    budget = MutationBudget(rate_per_second=1, burst=2, clock=clock, sleep=clock.sleep)
    for key in [(ACCOUNT, REGION, "StopInstances"), (ACCOUNT, "eu-west-1", "StopInstances"),
                ("210987654321", REGION, "StopInstances"), (ACCOUNT, REGION, "ModifyVolume")]:
        assert budget.acquire(*key) == 0.0 and budget.acquire(*key) == 0.0
    assert clock.now == 0.0
    assert budget.acquire(ACCOUNT, REGION, "StopInstances") == 1.0  # that bucket alone is empty


def test_only_mutating_operations_spend(aws: AwsAccount) -> None:
    assert not is_mutating("DescribeInstances") and not is_mutating("GetCallerIdentity")
    assert is_mutating("StopInstances") and is_mutating("ModifyVolume") and is_mutating("DeleteSnapshot")
    clock = FakeClock()
    budget = MutationBudget(rate_per_second=2, burst=1, clock=clock, sleep=clock.sleep)
    sessions = SessionFactory(endpoint_url=aws.endpoint, mutation_budget=budget)
    ec2 = sessions.client(ACCOUNT, REGION, "ec2")
    instances = [aws.instance() for _ in range(3)]
    ec2.describe_instances(InstanceIds=instances)
    assert budget.spent == 0
    for instance in instances:
        ec2.stop_instances(InstanceIds=[instance])
    assert budget.spent == 3 and budget.waited_seconds == 1.0  # 1 at once, then 2 per second
    assert {aws.instance_state(i)[0] for i in instances} == {"stopped"}
