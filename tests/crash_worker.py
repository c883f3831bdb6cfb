"""A worker that dies right after its first apply has changed AWS, before reporting back.

Run as `python -m tests.crash_worker ADDRESS TASK_QUEUE MOTO_ENDPOINT DATABASE_URL MARKER`;
the test kills it with SIGKILL once MARKER exists: the worst moment for exactly-once.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.aws import SessionFactory
from runtime.settings import Settings
from runtime.temporal_client import connect
from store.repository import Store
from worker import build_worker


class _HangAfterApply(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, marker: Path) -> None:
        super().__init__(next)
        self.marker = marker

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        if activity.info().activity_type == "apply":
            self.marker.write_text(activity.info().workflow_id)
            await asyncio.sleep(600)  # killed here: AWS changed, Temporal never heard
        return result


class HangAfterApply(Interceptor):
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HangAfterApply(next, self.marker)


async def main(address: str, task_queue: str, endpoint: str, database_url: str, marker: str) -> None:
    client = await connect(Settings(temporal_address=address))
    store = await Store.open(database_url)
    worker = build_worker(client, task_queue=task_queue, sessions=SessionFactory(endpoint_url=endpoint),
                          store=store, interceptors=[HangAfterApply(Path(marker))])
    async with worker:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
