"""A 1,000-item plan survives its worker being killed (SIGKILL) mid-run.

The worker is the real `reclaim worker` process; a second one is started after
the first is killed. Everything ends COMPLETED, every instance is stopped, and
the plan's history stays bounded (it continues as new).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from domain.plan import PLAN_TERMINAL, PlanSpec, PlanStatus
from domain.status import ExecutionStatus as S
from starter.plans import Plans
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation

ITEMS = 1000


def _worker(client: Client, task_queue: str, endpoint: str, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    """The worker's log goes to a file: a pipe nobody reads while the plan runs fills up, and a
    worker blocked writing its log stalls the whole plan."""
    env = {**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "RECLAIM_TASK_QUEUE": task_queue, "DATABASE_URL": database_url, "AWS_ENDPOINT_URL": endpoint}
    with log.open("ab") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "reclaim"), "worker"], cwd=Path(__file__).parents[2],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(1500)
async def test_thousand_item_plan_completes_across_a_killed_worker(
    client: Client, aws: AwsAccount, store: Store, tmp_path: Path
) -> None:
    task_queue = f"plan1000-{uuid.uuid4()}"
    reservations = [aws.ec2.run_instances(ImageId=aws.ami(), MinCount=250, MaxCount=250, InstanceType="m5.large")
                    for _ in range(ITEMS // 250)]
    instances = [i["InstanceId"] for r in reservations for i in r["Instances"]]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    spec = PlanSpec.model_validate({
        "recommendations": [r.model_dump(mode="json") for r in recs], "strategy": "parallel",
        "rate": {"max_concurrency": 20},
        "options": {"step_timeout": timedelta(seconds=20), "verify_timeout": timedelta(seconds=60),
                    "rollback_window": timedelta(0)},
    })
    plans = Plans(client, task_queue, store)
    log = tmp_path / "workers.log"
    first = _worker(client, task_queue, aws.endpoint, store.url, log)
    second = None
    try:
        plan_id = (await plans.submit(spec, requested_by="alice", history_limit=2000)).plan_id
        for _ in range(3000):
            view = await plans.progress(plan_id)
            if view.counts.get(S.COMPLETED.value, 0) >= ITEMS // 4:
                break
            assert first.poll() is None, log.read_text()[-2000:]
            await asyncio.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        stored = await store.plans.get(plan_id)
        killed_at = stored.counts if stored else {}
        second = _worker(client, task_queue, aws.endpoint, store.url, log)
        done = await plans.wait(plan_id, until=PLAN_TERMINAL, timeout=900)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert killed_at.get(S.COMPLETED.value, 0) < ITEMS  # the kill really happened mid-run
    assert done.status is PlanStatus.COMPLETED, done.reason
    assert done.counts == {S.COMPLETED.value: ITEMS}
    states = aws.ec2.describe_instances(InstanceIds=instances)["Reservations"]
    assert {i["State"]["Name"] for r in states for i in r["Instances"]} == {"stopped"}
    assert sum(1 for e in done.events if "continuing as new" in e.message) >= 2
    report = await plans.report(plan_id)
    assert len(report.items) == ITEMS and report.counts == {"COMPLETED": ITEMS}
