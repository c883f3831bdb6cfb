"""The worker process is killed mid-apply; a new one finishes with exactly one backup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client

from activities.aws import SessionFactory
from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import attempts_of, completed_results, recommendation, request
from worker import build_worker


async def test_worker_killed_mid_apply_ends_completed_with_one_backup(
    client: Client, aws: AwsAccount, sessions: SessionFactory, store: Store,
    activity_executor: ThreadPoolExecutor, tmp_path: Path,
) -> None:
    task_queue = f"crash-{uuid.uuid4()}"
    marker = tmp_path / "applied"
    volume = aws.volume(size=30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", client.service_client.config.target_host, task_queue,
         aws.endpoint, store.url, str(marker)],
        cwd=Path(__file__).parents[2], env={**os.environ},
    )
    try:
        executions = Executions(client, task_queue)
        rec = recommendation("ebs.delete", volume, {"expected_size_gib": 30})
        started = await executions.start(request(rec, step_timeout=timedelta(seconds=5)))
        await executions.wait(started.execution_id, timeout=60)
        await executions.decide(started.execution_id, True, ApprovalInput(actor="bob", role=Role.APPROVER))
        for _ in range(600):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the crash worker never applied"
        assert volume not in aws.volumes()  # the mutation happened before the crash
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    survivor = build_worker(client, task_queue=task_queue, sessions=sessions, store=store,
                            executor=activity_executor, max_concurrent_activities=16)
    async with survivor:
        view = await executions.wait(started.execution_id, until=frozenset({S.COMPLETED, S.ROLLED_BACK,
                                                                            S.FAILED, S.ROLLBACK_FAILED}))
    assert view.status is S.COMPLETED, view.reason
    assert len(aws.snapshots_for(started.execution_id)) == 1
    assert volume not in aws.volumes()
    history = await executions.handle(started.execution_id).fetch_history()
    # The attempt on the killed worker was the first; a retry (the second, or a later one when a
    # loaded machine let the second outlive its step timeout) found the volume gone and changed nothing.
    [last] = attempts_of(history, "apply")
    assert last >= 2
    assert completed_results(history, "apply") == [{"changed": False}]
    assert attempts_of(history, "backup") == [1]
