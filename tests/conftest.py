"""Real parts for every test: the Temporal dev server, a moto server, SQLite (and PostgreSQL in the store tests)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
import requests
from moto.server import ThreadedMotoServer
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Interceptor

from activities.aws import SessionFactory
from activities.faults import FaultInjector
from runtime.temporal_client import ensure_search_attributes
from starter.devserver import dev_server_args, free_port, temporal_binary
from starter.executions import Executions
from store.repository import Store
from tests.notify_support import HttpReceiver, http_receiver
from worker import build_worker
from workflows import search_attributes as sa

os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
os.environ.pop("AWS_PROFILE", None)

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[AwsAccount]:
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    yield AwsAccount(moto_endpoint)


class AwsAccount:
    """Seeds and inspects the moto account the way an operator would, through boto3."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        self._ami: str | None = None

    def ami(self) -> str:
        if self._ami is None:
            self._ami = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        return self._ami

    def instance(self, instance_type: str = "m5.large", tags: dict[str, str] | None = None,
                 state: str = "running") -> str:
        spec: dict[str, Any] = {"ImageId": self.ami(), "MinCount": 1, "MaxCount": 1, "InstanceType": instance_type}
        if tags:
            spec["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        instance_id = str(self.ec2.run_instances(**spec)["Instances"][0]["InstanceId"])
        if state == "stopped":
            self.ec2.stop_instances(InstanceIds=[instance_id])
        return instance_id

    def volume(self, size: int = 100, volume_type: str = "gp2", tags: dict[str, str] | None = None) -> str:
        spec: dict[str, Any] = {"AvailabilityZone": f"{REGION}a", "Size": size, "VolumeType": volume_type}
        if tags:
            spec["TagSpecifications"] = [
                {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        return str(self.ec2.create_volume(**spec)["VolumeId"])

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        return dict(self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])

    def instance_state(self, instance_id: str) -> tuple[str, str]:
        instance = self.describe_instance(instance_id)
        return instance["State"]["Name"], instance["InstanceType"]

    def volumes(self) -> dict[str, dict[str, Any]]:
        return {v["VolumeId"]: v for v in self.ec2.describe_volumes()["Volumes"]}

    def snapshots_for(self, execution_id: str) -> list[dict[str, Any]]:
        return list(self.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "tag:reclaim:execution-id", "Values": [execution_id]}]
        )["Snapshots"])


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    extra = dev_server_args(None, 0, None)
    # start_local sets ip/port/headless/db itself; keep only our dynamic config.
    dynamic = [v for i, v in enumerate(extra) if i > 0 and extra[i - 1] == "--dynamic-config-value"]
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_binary(),
        search_attributes=sa.ALL,
        dev_server_extra_args=[a for d in dynamic for a in ("--dynamic-config-value", d)],
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (one per module): timers of hours pass in a moment."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
    )
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest_asyncio.fixture(scope="session")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Store]:
    path: Path = tmp_path_factory.mktemp("db") / "reclaim.db"
    opened = await Store.open(f"sqlite+aiosqlite:///{path}")
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def activity_executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


class Stack:
    """A running worker on its own task queue, and the typed client steering it."""

    def __init__(self, client: Client, task_queue: str, sessions: SessionFactory, store: Store) -> None:
        self.client = client
        self.task_queue = task_queue
        self.sessions = sessions
        self.store = store
        self.executions = Executions(client, task_queue)


@pytest.fixture
def faults() -> FaultInjector:
    """Rules a test appends are answered by 'AWS' (the boto3 layer) with the given error code."""
    return FaultInjector([])


@pytest.fixture
def sessions(moto_endpoint: str, faults: FaultInjector) -> SessionFactory:
    return SessionFactory(endpoint_url=moto_endpoint, session_hooks=[faults.install])


@pytest.fixture
def interceptors() -> list[Interceptor]:
    """Override in a test module to observe or disturb activities."""
    return []


@pytest_asyncio.fixture
async def stack(
    client: Client, sessions: SessionFactory, store: Store, aws: AwsAccount,
    activity_executor: ThreadPoolExecutor, interceptors: list[Interceptor],
) -> AsyncIterator[Stack]:
    task_queue = f"tq-{uuid.uuid4()}"
    worker = build_worker(
        client, task_queue=task_queue, sessions=sessions, store=store,
        executor=activity_executor, interceptors=interceptors, max_concurrent_activities=16,
    )
    async with worker:
        yield Stack(client, task_queue, sessions, store)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """A local HTTP receiver (webhook, Slack, Teams) that keeps what it got."""
    with http_receiver() as got:
        yield got
