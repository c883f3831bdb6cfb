"""Two worker processes, each spending half of AWS's buckets, never overrun the account.

"AWS" is a moto server that logs when each request arrives (tests/fault_support.py); AWS's
token bucket is then replayed over those arrivals: a request finding the bucket empty is one
AWS would have refused. Each process alone would be allowed the whole bucket; together, by
their share, they must never overrun it, while making more requests than a full bucket holds
(so the refill is really spent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3

from activities.gateway.buckets import AWS_RATES, Rate
from starter.devserver import free_port
from tests.fault_support import AwsCall, CountingMotoServer

SHARE = "0.5"
CALLS = 100
"""Per process: 100 describes and 50 StopInstances; together twice that, against buckets of
100 (+20/s) and 50 (+5/s): with the whole budget each, the mutating bucket would overrun."""


def refused_by_aws(arrivals: list[float], rate: Rate) -> int:
    """How many of these arrivals AWS's bucket (full at the first one) would have refused."""
    refused, tokens, last = 0, rate.capacity, arrivals[0] if arrivals else 0.0
    for at in sorted(arrivals):
        tokens = min(rate.capacity, tokens + (at - last) * rate.refill_per_second)
        last = at
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            refused += 1
    return refused


def test_replaying_aws_s_bucket_finds_an_overrun() -> None:
    """The check itself: 60 mutations at once overrun a bucket of 50; spread at 5/s they do not."""
    mutating = AWS_RATES["ec2-mutating"]
    assert refused_by_aws([0.0] * 60, mutating) == 10
    assert refused_by_aws([i / 5 for i in range(60)], mutating) == 0


def test_two_workers_with_half_the_budget_each_are_never_throttled(tmp_path: Path) -> None:
    moto = CountingMotoServer(free_port())
    moto.start()
    try:
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto.endpoint)
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        reservation = ec2.run_instances(ImageId=image, MinCount=20, MaxCount=20, InstanceType="t3.micro")
        listed = tmp_path / "instances.txt"
        listed.write_text("\n".join(i["InstanceId"] for i in reservation["Instances"]))
        moto.forget()
        workers = [subprocess.Popen([sys.executable, "-m", "tests.budget_client", moto.endpoint, SHARE, str(listed),
                                     str(CALLS)], cwd=Path(__file__).parents[2], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        said = [w.communicate(timeout=180)[0] for w in workers]
        calls: list[AwsCall] = moto.calls()
    finally:
        moto.stop()
    assert [w.returncode for w in workers] == [0, 0], said
    stops = [c.at for c in calls if c.operation == "StopInstances"]
    describes = [c.at for c in calls if c.operation == "DescribeInstances"]
    assert (len(describes), len(stops)) == (2 * CALLS, CALLS), said
    assert stops[-1] - stops[0] > 5, "the refill was never needed: the test proves nothing"
    assert refused_by_aws(stops, AWS_RATES["ec2-mutating"]) == 0, said
    assert refused_by_aws(describes, AWS_RATES["ec2-describe"]) == 0, said
