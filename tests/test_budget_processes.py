"""Two worker processes, each spending half of AWS's buckets, never overrun the account.

AWS here is aws-race's `mockaws.py --throttle` (`../shared/aws-race`): AWS's own token
buckets in front of moto, refusing what AWS would refuse. Each process alone would be
allowed the whole bucket; together, by their share, they must never be throttled,
while making more requests than one full bucket holds (so the refill is really spent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3

from bench.race import DEFAULT_DIR, mockaws, throttle

SHARE = "0.5"
CALLS = 100
"""Per process: 100 describes and 50 StopInstances; together twice that, against buckets of
100 (+20/s) and 50 (+5/s): with the whole budget each, the mutating bucket would overrun."""


def test_two_workers_with_half_the_budget_each_are_never_throttled(tmp_path: Path) -> None:
    assert (DEFAULT_DIR / "mockaws.py").exists(), f"aws-race tools not found at {DEFAULT_DIR}"
    with mockaws(DEFAULT_DIR, tmp_path, "mockaws") as (endpoint, _):
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)
        # mockaws loads no AMIs; moto accepts any image id of the right form.
        reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=20, MaxCount=20, InstanceType="t3.micro")
        listed = tmp_path / "instances.txt"
        listed.write_text("\n".join(i["InstanceId"] for i in reservation["Instances"]))
        throttle(endpoint, "on")  # AWS's buckets, full, from now on
        workers = [subprocess.Popen([sys.executable, "-m", "tests.budget_client", endpoint, SHARE, str(listed),
                                     str(CALLS)], cwd=Path(__file__).parents[1], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        said = [w.communicate(timeout=180)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], said
        counts = throttle(endpoint)
    served = {key: value for key, value in counts["counts"].items() if key.startswith("us-east-1:")}
    assert served.get("us-east-1:ec2-describe", {}).get("allowed") == 2 * CALLS, (served, said)
    assert served.get("us-east-1:ec2-mutating", {}).get("allowed") == CALLS, (served, said)
    assert sum(v.get("throttled", 0) for v in served.values()) == 0, (served, said)
