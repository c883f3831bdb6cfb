"""Resources in moto for several action kinds, the requests that target them, and the no-engine baseline.

Throughput uses the kinds the default policy auto-approves (LOW risk, reversible,
no data deleted) that moto creates in one call each: ec2.stop, ebs.gp2_to_gp3,
s3.lifecycle and dynamodb.billing_mode, round-robin. The baseline runs the very
same action code (`Action.inspect/refusal/backup/apply/verify`, the account check
once per account and region, as the worker's activities do) on a plain thread
pool: the same boto3 calls in the same order, without Temporal, the read model
or the workflow around them.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3

from activities.actions.base import action_class
from activities.aws import SessionFactory
from activities.errors import InProgress, Refused
from domain.execution import ExecutionOptions, ExecutionRequest
from domain.recommendation import Recommendation

REGION, ACCOUNT = "us-east-1", "123456789012"


@dataclass(frozen=True)
class Target:
    kind: str
    resource_id: str
    params: dict[str, Any]
    savings: float


def _ec2(client: Any, n: int) -> list[Target]:
    ami = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids: list[str] = []
    while len(ids) < n:
        batch = min(100, n - len(ids))
        ids += [i["InstanceId"] for i in client.run_instances(
            ImageId=ami, MinCount=batch, MaxCount=batch, InstanceType="m5.large")["Instances"]]
    return [Target("ec2.stop", i, {"expected_instance_type": "m5.large"}, 70.0) for i in ids]


def _volume(client: Any, _: str) -> Target:
    vid = client.create_volume(VolumeType="gp2", Size=200, AvailabilityZone=f"{REGION}a")["VolumeId"]
    return Target("ebs.gp2_to_gp3", vid, {"expected_volume_type": "gp2"}, 10.0)


def _bucket(client: Any, name: str) -> Target:
    client.create_bucket(Bucket=name)
    return Target("s3.lifecycle", name, {"storage_class": "STANDARD_IA", "transition_days": 30, "prefix": "logs/"},
                  5.0)


def _table(client: Any, name: str) -> Target:
    client.create_table(TableName=name, BillingMode="PROVISIONED",
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 5})
    return Target("dynamodb.billing_mode", name, {"expected_mode": "PROVISIONED", "target_mode": "PAY_PER_REQUEST"},
                  20.0)


#: kind -> (boto3 service, seeder of one named resource); ec2.stop is seeded in batches instead.
_ONE_BY_ONE: dict[str, tuple[str, Callable[[Any, str], Target]]] = {
    "ebs.gp2_to_gp3": ("ec2", _volume),
    "s3.lifecycle": ("s3", _bucket),
    "dynamodb.billing_mode": ("dynamodb", _table),
}
KINDS = ("ec2.stop", *_ONE_BY_ONE)


def seed(endpoint: str, n: int, kinds: Iterable[str] = KINDS, threads: int = 16) -> list[Target]:
    """`n` fresh resources, round-robin over `kinds`, interleaved in that order."""
    kinds = list(kinds)
    wanted = {k: len(range(i, n, len(kinds))) for i, k in enumerate(kinds)}
    made: dict[str, list[Target]] = {}
    if wanted.get("ec2.stop"):
        made["ec2.stop"] = _ec2(boto3.client("ec2", region_name=REGION, endpoint_url=endpoint), wanted["ec2.stop"])
    tag = uuid.uuid4().hex[:8]
    jobs: list[tuple[str, int]] = [(k, i) for k in kinds if k in _ONE_BY_ONE for i in range(wanted[k])]
    clients = {k: boto3.client(_ONE_BY_ONE[k][0], region_name=REGION, endpoint_url=endpoint) for k in _ONE_BY_ONE}

    def one(job: tuple[str, int]) -> Target:
        kind, i = job
        return _ONE_BY_ONE[kind][1](clients[kind], f"bench-{tag}-{_ONE_BY_ONE[kind][0]}-{i}")  # one lease name each

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for target in pool.map(one, jobs):
            made.setdefault(target.kind, []).append(target)
    columns = [made.get(k, []) for k in kinds]
    return [t for group in itertools.zip_longest(*columns) for t in group if t is not None]


def request(run: str, n: int, target: Target, *, auto: bool = True) -> ExecutionRequest:
    """No rollback window, so a finished execution closes and its result can be long-polled."""
    rec = Recommendation(id=f"bench-{run}-{n}", customer_id="bench", account_id=ACCOUNT, region=REGION,
                         kind=target.kind, resource_id=target.resource_id, params=target.params,
                         estimated_monthly_savings=target.savings)
    return ExecutionRequest(recommendation=rec, requested_by="bench",
                            options=ExecutionOptions(auto_approve=auto, rollback_window=timedelta(0)))


def _converge(step: Callable[[], Any], attempts: int = 50) -> Any:
    """What the retry policy does for InProgress, with a short fixed pause instead of backoff."""
    for _ in range(attempts):
        try:
            return step()
        except InProgress:
            time.sleep(0.05)
    raise RuntimeError("still in progress")


def baseline(endpoint: str, targets: list[Target], threads: int = 32) -> dict[str, Any]:
    """The same action code the activities run, on a thread pool: executions/s, and InProgress retries seen."""
    sessions = SessionFactory(endpoint_url=endpoint)
    checked = False

    def one(item: tuple[int, Target]) -> None:
        nonlocal checked
        n, target = item
        rec = Recommendation(id=f"base-{n}", customer_id="bench", account_id=ACCOUNT, region=REGION,
                             kind=target.kind, resource_id=target.resource_id, params=target.params,
                             estimated_monthly_savings=target.savings)
        action = action_class(target.kind)(sessions, rec, f"exec-base-{n}")
        if not checked:  # the worker checks the account once per account and region
            sessions.client(ACCOUNT, REGION, "sts").get_caller_identity()
            checked = True
        seen = action.inspect()                          # validate (local activity)
        if action.refusal(seen) is not None:
            raise Refused(f"{target.kind} {target.resource_id}: {action.refusal(seen)}")
        action.estimate_monthly_savings(seen)
        action.plan(seen)
        backup = _converge(lambda: action.backup(seen))  # backup
        _converge(lambda: action.apply(seen, backup))    # apply
        _converge(lambda: action.verify(seen, backup))   # verify

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, enumerate(targets)))
    elapsed = time.perf_counter() - start
    return {"per_s": len(targets) / elapsed, "seconds": elapsed}
