"""The Temporal dev server (file database, WAL) restarted mid-run: every execution completes.

The worker, the client and the executions' steering live through the restart;
the server comes back on the same port with the same SQLite file.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from activities.aws import SessionFactory
from runtime.settings import Settings
from runtime.temporal_client import connect
from starter.devserver import dev_server, free_port
from store.repository import Store
from tests.fault_support import (
    CountingMotoServer,
    Fleet,
    Planned,
    describe,
    drive,
    mutations_on,
    operations_on,
    wrong_outcomes,
)
from worker import build_worker

EXECUTIONS = 24



def scenarios(fleet: Fleet) -> list[Planned]:
    made: list[Planned] = []
    for _ in range(EXECUTIONS // 4):
        made += [fleet.stop(), fleet.delete(), fleet.rightsize(), fleet.gp3(rollback=True)]
    return made


@pytest.mark.timeout(600)
async def test_executions_complete_across_a_dev_server_restart(
    counting_moto: CountingMotoServer, activity_executor: ThreadPoolExecutor, tmp_path: Path,
) -> None:
    home, port = tmp_path / "temporal", free_port()
    planned = scenarios(Fleet(counting_moto.endpoint))
    counting_moto.forget()
    first = ExitStack()
    server = first.enter_context(dev_server(home, port=port, ui_port=None, persistent=True))
    later = ExitStack()
    store = await Store.open(f"sqlite:///{tmp_path / 'reclaim.db'}")
    try:
        client = await connect(Settings(temporal_address=server.address))
        task_queue, run = f"restart-{uuid.uuid4()}", f"restart-{uuid.uuid4().hex[:8]}"
        worker = build_worker(client, task_queue=task_queue, store=store, executor=activity_executor,
                              sessions=SessionFactory(endpoint_url=counting_moto.endpoint),
                              max_concurrent_activities=16)
        async with worker:
            drives = [asyncio.create_task(drive(client, task_queue, p, run, n)) for n, p in enumerate(planned)]
            # Mid-run: some executions have closed, most have not.
            while sum(d.done() for d in drives) < EXECUTIONS // 6:
                await asyncio.sleep(0.05)
            open_at_restart = sum(not d.done() for d in drives)
            down = time.monotonic()
            first.close()  # the server stops (SIGTERM, as an operator would)
            assert server.process.poll() is not None
            server = later.enter_context(dev_server(home, port=port, ui_port=None, persistent=True))
            outage = time.monotonic() - down
            outcomes = await asyncio.wait_for(asyncio.gather(*drives), timeout=420)
    finally:
        later.close()
        first.close()
        await store.close()
    received = counting_moto.calls()
    print(f"\nrestarted with {open_at_restart} of {EXECUTIONS} executions open; server away {outage:.1f} s; "
          f"AWS served {describe(received)}")

    assert open_at_restart >= EXECUTIONS // 2, "the restart did not land mid-run"
    assert not wrong_outcomes(planned, outcomes), wrong_outcomes(planned, outcomes)
    for p in planned:
        assert operations_on(received, p.resource_id) == sorted(p.mutations), p.execution_id
        assert max(mutations_on(received, p.resource_id).values()) == 1, p.execution_id
