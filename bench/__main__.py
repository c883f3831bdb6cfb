"""`make bench`: throughput and approval latency on the embedded stack, with a baseline in the same run.

A first cut of the benchmark issue: the dev server with a file database and WAL
pragmas, an in-process moto server, one in-process worker. Prints one JSON
object and a table, and saves the JSON under bench/results/.

    python -m bench [--executions N] [--approvals M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from activities.aws import SessionFactory
from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest
from domain.policy import Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from starter.devserver import free_port
from starter.executions import Executions
from starter.settings import Settings
from starter.stack import embedded_stack

REGION, ACCOUNT = "us-east-1", "123456789012"


def _instances(ec2: Any, n: int) -> list[str]:
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids: list[str] = []
    while len(ids) < n:
        batch = min(100, n - len(ids))
        ids += [i["InstanceId"] for i in
                ec2.run_instances(ImageId=ami, MinCount=batch, MaxCount=batch, InstanceType="m5.large")["Instances"]]
    return ids


def _request(run: str, n: int, instance: str, auto: bool = True) -> ExecutionRequest:
    """No rollback window, so a finished execution closes and its result can be long-polled
    (status-query polling by hundreds of waiters would load the 2 cores more than the engine)."""
    rec = Recommendation(id=f"bench-{run}-{n}", customer_id="bench", account_id=ACCOUNT, region=REGION,
                         kind="ec2.stop", resource_id=instance, estimated_monthly_savings=70.0)
    return ExecutionRequest(recommendation=rec, requested_by="bench",
                            options=ExecutionOptions(auto_approve=auto, rollback_window=timedelta(0)))


def baseline(ec2: Any, instances: list[str]) -> float:
    """The same AWS calls an ec2.stop execution makes (identity, describe x3, dry-run-free stop), no engine."""
    sts = boto3.client("sts", region_name=REGION, endpoint_url=ec2.meta.endpoint_url)

    def one(instance: str) -> None:
        sts.get_caller_identity()
        ec2.describe_instances(InstanceIds=[instance])
        ec2.describe_instances(InstanceIds=[instance])
        ec2.stop_instances(InstanceIds=[instance])
        ec2.describe_instances(InstanceIds=[instance])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, instances))
    return len(instances) / (time.perf_counter() - start)


async def throughput(executions: Executions, run: str, instances: list[str]) -> float:
    start = time.perf_counter()
    started = await asyncio.gather(*(executions.start(_request(run, n, i)) for n, i in enumerate(instances)))
    views = await asyncio.gather(*(executions.handle(s.execution_id).result() for s in started))
    elapsed = time.perf_counter() - start
    bad = [v.status for v in views if v.status is not S.COMPLETED]
    if bad:
        raise SystemExit(f"{len(bad)} executions did not complete: {bad[:5]}")
    return len(instances) / elapsed


async def approval_latency(executions: Executions, run: str, instances: list[str], path: str) -> list[float]:
    """Approve -> the execution leaves AWAITING_APPROVAL and its backup step starts (status query)."""
    started = await asyncio.gather(*(executions.start(_request(f"{run}-{path}", n, i, auto=False))
                                     for n, i in enumerate(instances)))
    await asyncio.gather(*(executions.wait(s.execution_id) for s in started))
    latencies = []
    for s in started:
        t0 = time.perf_counter()
        approver = ApprovalInput(actor="bob", role=Role.APPROVER)
        if path == "update":
            await executions.decide(s.execution_id, True, approver)
        else:
            from workflows.execution import ExecutionWorkflow

            await executions.handle(s.execution_id).signal(ExecutionWorkflow.approve_signal, approver)
        await executions.wait(s.execution_id, until=frozenset({S.BACKING_UP, S.APPLYING, S.VERIFYING,
                                                               S.COMPLETED}), timeout=60)
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(n: int, approvals: int) -> dict[str, Any]:
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
    run = datetime.now(UTC).strftime("%H%M%S")
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="reclaim-bench-")), task_queue="bench")
    try:
        base_rate = baseline(ec2, _instances(ec2, n))
        async with embedded_stack(settings, port=0, ui_port=None, sessions=SessionFactory(endpoint_url=endpoint),
                                  persistent=True) as stack:
            executions = Executions(stack.client, settings.task_queue)
            rate = await throughput(executions, run, _instances(ec2, n))
            signal = await approval_latency(executions, run, _instances(ec2, approvals), "signal")
            update = await approval_latency(executions, run, _instances(ec2, approvals), "update")
    finally:
        moto.stop()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "executions": n,
        "throughput_per_s": round(rate, 2),
        "baseline_boto3_per_s": round(base_rate, 2),
        "engine_to_baseline_ratio": round(rate / base_rate, 3),
        "approval_to_backup_ms": {
            path: {"p50": round(statistics.median(v), 1), "p99": round(_pct(v, 99), 1), "n": len(v)}
            for path, v in (("signal", signal), ("update", update))
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--approvals", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(main(args.executions, args.approvals))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench-{result['when'].replace(':', '')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    print(f"\n{'measure':<34}{'value':>12}")
    print(f"{'executions/s (engine)':<34}{result['throughput_per_s']:>12}")
    print(f"{'executions/s (boto3 baseline)':<34}{result['baseline_boto3_per_s']:>12}")
    print(f"{'engine / baseline':<34}{result['engine_to_baseline_ratio']:>12}")
    for path, figures in result["approval_to_backup_ms"].items():
        print(f"{'approve->backup p50/p99 ms (' + path + ')':<34}{figures['p50']:>6}/{figures['p99']}")
