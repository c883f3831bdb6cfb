"""One "worker" of tests/journeys/test_budget_processes.py: its share of the AWS budget, many threads.

`python -m tests.budget_client ENDPOINT SHARE INSTANCES_FILE CALLS` makes CALLS describes and
CALLS/2 StopInstances (EC2's mutating bucket: 50, then 5/s) on the instances listed in the
file, through Reclaim's own session factory and budget, from 8 threads at once.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from activities.aws import SessionFactory
from activities.gateway.buckets import AwsBudget


def main(endpoint: str, share: float, instances_file: Path, calls: int) -> None:
    instances = instances_file.read_text().split()
    budget = AwsBudget(share=share)
    ec2 = SessionFactory(endpoint_url=endpoint, budget=budget, coalesce_window=0).client(
        "123456789012", "us-east-1", "ec2")

    def one(n: int) -> None:
        instance = instances[n % len(instances)]
        ec2.describe_instances(InstanceIds=[instance])
        if n % 2 == 0:
            ec2.stop_instances(InstanceIds=[instance])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(calls)))
    print(f"spent {budget.spent} waited {budget.waited_seconds:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
