"""`kill -9` of the worker at random points across 50 executions, a new worker started each time.

The worker is the real `reclaim worker` process; the moto server counts every
request it serves. Executions start at random moments while workers are
killed at random moments, so kills land in validation, backups, mutations,
verifications, rollbacks and approvals. Afterwards every execution must have
closed in the state its scenario calls for, with exactly one backup, and AWS
must have received each mutation exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from temporalio.client import Client

from domain.status import ExecutionStatus as S
from tests.fault_support import (
    CountingMotoServer,
    Fleet,
    Planned,
    describe,
    drive,
    mutations_on,
    operations_on,
    stop_process,
    wrong_outcomes,
)
from tests.helpers import attempts_of
from workflows.execution import ExecutionWorkflow

EXECUTIONS = 50
SEED = 20250406
MAX_KILLS = 25
#: Executions keep arriving this long, so that kills keep landing mid-run however fast each one is.
STAGGER_SECONDS = 75
ROOT = Path(__file__).parents[2]



def scenarios(fleet: Fleet) -> list[Planned]:
    """Per ten: 4 stops, 2 approved deletions, a rightsize, a gp3 rolled back on request,
    a production instance (refused) and a rejected deletion."""
    makers: list[Callable[[], Planned]] = [
        fleet.stop, fleet.stop, fleet.stop, fleet.stop, fleet.delete, fleet.delete, fleet.rightsize,
        lambda: fleet.gp3(rollback=True), fleet.production, lambda: fleet.delete(approve=False),
    ]
    return [makers[n % len(makers)]() for n in range(EXECUTIONS)]


def worker_process(address: str, task_queue: str, endpoint: str, database_url: str,
                   log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "RECLAIM_TASK_QUEUE": task_queue,
           "DATABASE_URL": database_url, "AWS_ENDPOINT_URL": endpoint}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "starter.cli", "worker"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(900)
async def test_workers_killed_at_random_points_never_lose_or_repeat_a_change(
    client: Client, counting_moto: CountingMotoServer, tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    planned = scenarios(Fleet(counting_moto.endpoint))
    counting_moto.forget()  # count from here: the seeding is not Reclaim's doing
    task_queue, run = f"kill-{uuid.uuid4()}", f"kill-{uuid.uuid4().hex[:8]}"
    address, database_url = client.service_client.config.target_host, f"sqlite:///{tmp_path / 'reclaim.db'}"
    log = tmp_path / "workers.log"

    def spawn() -> subprocess.Popen[bytes]:
        return worker_process(address, task_queue, counting_moto.endpoint, database_url, log)

    async def staggered(n: int, p: Planned) -> str:
        await asyncio.sleep(rng.uniform(0, STAGGER_SECONDS))
        return await drive(client, task_queue, p, run, n)

    drives = [asyncio.create_task(staggered(n, p)) for n, p in enumerate(planned)]
    kills: list[int] = []  # executions started and still open at each kill
    started = time.monotonic()
    worker = spawn()
    try:
        while len(kills) < MAX_KILLS and not all(d.done() for d in drives):
            await asyncio.wait(drives, timeout=rng.uniform(1.5, 5.0))
            if all(d.done() for d in drives):
                break
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            kills.append(sum(bool(p.execution_id) and not d.done() for p, d in zip(planned, drives, strict=True)))
            worker = spawn()
        outcomes = await asyncio.wait_for(asyncio.gather(*drives), timeout=600)
    finally:
        for d in drives:
            d.cancel()
        stop_process(worker)
    elapsed = time.monotonic() - started
    received = counting_moto.calls()

    retried = 0
    for p in planned:
        history = await client.get_workflow_handle(p.execution_id).fetch_history()
        retried += sum(a > 1 for step in ("backup", "apply", "verify", "revert") for a in attempts_of(history, step))
    print(f"\n{len(kills)} kills in {elapsed:.0f} s (open executions at each: {kills}); "
          f"{retried} mutating-step attempts re-run after a kill; AWS served {describe(received)}")

    assert len([k for k in kills if k > 0]) >= 10, f"too few kills landed mid-run: {kills}"
    assert retried > 0, "no kill interrupted a step: the test proved nothing"
    assert not wrong_outcomes(planned, outcomes), wrong_outcomes(planned, outcomes)
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=counting_moto.endpoint)
    for p in planned:
        operations = operations_on(received, p.resource_id)
        assert operations == sorted(p.mutations), (p.execution_id, p.kind, operations)
        repeated = {key: n for key, n in mutations_on(received, p.resource_id).items() if n > 1}
        assert not repeated, (p.execution_id, "mutation applied twice", repeated)
        view = await client.get_workflow_handle_for(ExecutionWorkflow.run, p.execution_id).result()
        changed = view.status in (S.COMPLETED, S.ROLLED_BACK)
        assert len(view.backups) == (1 if changed else 0), (p.execution_id, view.backups)
        if p.kind == "ebs.delete":
            snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
                {"Name": "tag:reclaim:execution-id", "Values": [p.execution_id]}])["Snapshots"]
            assert len(snapshots) == (1 if changed else 0), (p.execution_id, snapshots)
