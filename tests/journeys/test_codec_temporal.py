"""Encrypted payloads on the dev server: ciphertext in history, replay, rotation, wrong keys, the stock CLI.

The execution runs through `runtime.temporal_client.connect`, the one way every Reclaim process
(worker, CLI, API, dev stack, demo) reaches Temporal, with RECLAIM_ENCRYPT's settings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from activities.aws import SessionFactory
from domain.execution import ApprovalInput
from domain.policy import Role
from domain.status import ExecutionStatus as S
from runtime.codec import ENCODING, CodecError, EncryptionCodec, data_converter, new_key_line
from runtime.settings import Settings
from runtime.temporal_client import connect
from starter.api.auth import TokenEntry, TokenStore
from starter.api.server import serve_asgi
from starter.codec_server import Readers, create_codec_app
from starter.devserver import free_port, port_open
from starter.executions import Executions
from store.repository import Store
from tests.conftest import AwsAccount
from tests.helpers import recommendation, request
from worker import WORKFLOWS, build_worker, workflow_runner

K1, K2, K3 = new_key_line("k1"), new_key_line("k2"), new_key_line("k3")
TEMPORAL = str(Path(sys.executable).parent / "temporal")
CORE_MARKER_FIELDS = (".details.patch-data.payloads[0]", ".details.data.payloads[0]")


def settings_with(address: str, *keys: str) -> Settings:
    return Settings(temporal_address=address, encrypt=True, codec_keys=",".join(keys))


def converter(*keys: str) -> DataConverter:
    return data_converter(Settings(encrypt=True, codec_keys=",".join(keys)), pydantic_data_converter)


def payloads_in(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Payload of a history in its JSON form (a dict with metadata.encoding), search attributes apart."""
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict) and "encoding" in node["metadata"]:
            yield path, node
            return
        for key, value in node.items():
            if key != "searchAttributes":
                yield from payloads_in(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from payloads_in(value, f"{path}[{index}]")


def clear_text(node: Any) -> str:
    """What a reader of the history store sees: every string, base64 decoded beside, except the index
    (search attributes), workflow ids and the priority's fairness key (the customer, so the task
    queue can serve customers in turn), which are plaintext by design (README, Encryption)."""
    if isinstance(node, dict):
        return " ".join(clear_text(v) for k, v in node.items()
                        if k not in ("searchAttributes", "workflowId", "priority"))
    if isinstance(node, list):
        return " ".join(clear_text(v) for v in node)
    if isinstance(node, str):
        try:
            return node + " " + base64.b64decode(node, validate=True).decode("utf-8", "replace")
        except ValueError:
            return node
    return str(node)


@pytest.fixture
def address(client: Client) -> str:
    return client.service_client.config.target_host


class Running:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client, self.executions = client, Executions(client, task_queue)


@pytest.fixture
def run_worker(address: str, moto_endpoint: str, store: Store, activity_executor: ThreadPoolExecutor) -> Any:
    """A worker (and its client) whose payload keys are `keys`, newest first, for the block."""
    import contextlib

    @contextlib.asynccontextmanager
    async def running(task_queue: str, *keys: str) -> AsyncIterator[Running]:
        client = await connect(settings_with(address, *keys))
        worker = build_worker(client, task_queue=task_queue, sessions=SessionFactory(endpoint_url=moto_endpoint),
                              store=store, executor=activity_executor, max_concurrent_activities=8)
        async with worker:
            yield Running(client, task_queue)

    return running


@pytest.mark.timeout(180)
async def test_an_encrypted_execution_leaves_ciphertext_replays_and_survives_a_key_rotation(
    aws: AwsAccount, run_worker: Any, address: str, tmp_path: Path,
) -> None:
    marker = uuid.uuid4().hex[:10]
    tag, comment, customer = f"payroll-{marker}", f"checked the graphs {marker}", f"cust-{marker}"
    instance = aws.instance(tags={"Name": tag, "owner": f"alice-{marker}@example.com"})
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}, customer_id=customer)
    task_queue = f"tq-codec-{uuid.uuid4()}"

    async with run_worker(task_queue, K1) as first:  # started under k1 ...
        eid = (await first.executions.start(request(rec, auto_approve=False))).execution_id
        assert (await first.executions.wait(eid)).status is S.AWAITING_APPROVAL
    async with run_worker(task_queue, K2, K1) as rotated:  # ... k2 now seals, k1 still opens: it goes on
        await rotated.executions.decide(eid, True, ApprovalInput(actor="bob", role=Role.APPROVER, comment=comment))
        assert (await rotated.executions.wait(eid)).status is S.COMPLETED
        history = await rotated.client.get_workflow_handle(eid).fetch_history()
        # A client with the wrong key cannot read the status: it says why, never shows ciphertext as data.
        stranger = Executions(await connect(settings_with(address, K3)), task_queue)
        with pytest.raises(CodecError, match="key 'k2', which this process does not have"):
            await stranger.status(eid)

    raw = json.loads(history.to_json())
    # sdk-core's own bookkeeping in its markers stays plain (a patch id; a local activity's type, id and
    # times): no value of ours is in it, and the clear-text search below covers it too.
    found = [(where, p) for where, p in payloads_in(raw) if not where.endswith(CORE_MARKER_FIELDS)]
    encodings = {base64.b64decode(p["metadata"]["encoding"]) for _, p in found}
    assert len(found) > 20 and encodings == {ENCODING}, [(w, p["metadata"]) for w, p in found
                                                         if base64.b64decode(p["metadata"]["encoding"]) != ENCODING]
    key_ids = {base64.b64decode(p["metadata"]["encryption-key-id"]).decode() for _, p in found}
    assert key_ids == {"k1", "k2"}
    readable = clear_text(raw)
    leaks = [what for what in (instance, tag, comment, customer, f"alice-{marker}") if what in readable]
    assert not leaks, f"in clear in the history: {leaks}"
    # Not vacuous: opened with the keys, the same payloads hold all of them.
    codec = converter(K2, K1).payload_codec
    assert isinstance(codec, EncryptionCodec)
    opened = await codec.decode([json_format.ParseDict(p, Payload()) for _, p in found])
    plain = " ".join(p.data.decode("utf-8", "replace") for p in opened)
    assert all(what in plain for what in (instance, tag, comment, customer)), plain[:500]

    # Replay with the keys works; with another key it fails, loudly.
    replayed = await Replayer(workflows=WORKFLOWS, data_converter=converter(K2, K1),
                              workflow_runner=workflow_runner()).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    with pytest.raises(Exception, match='r#type: "CodecError"'):  # the why is sealed: see the next test
        await Replayer(workflows=WORKFLOWS, data_converter=converter(K3),
                       workflow_runner=workflow_runner()).replay_workflow(history)

    # The stock CLI reads the same history through the codec server with a reader's token.
    token = f"reader-{uuid.uuid4().hex}"
    readers = Readers([TokenStore([TokenEntry(subject="carol", role=Role.VIEWER, customers=["*"], token=token)])])
    app = create_codec_app(converter(K2, K1).payload_codec, readers, ui_origins=[])  # type: ignore[arg-type]
    port, stop = free_port(), asyncio.Event()
    serving = asyncio.create_task(serve_asgi(app, "127.0.0.1", port, stop))
    try:
        for _ in range(100):
            if port_open("127.0.0.1", port):
                break
            await asyncio.sleep(0.05)
        argv = [TEMPORAL, "workflow", "show", "--workflow-id", eid, "--address", address, "--output", "json"]
        shown = await asyncio.to_thread(subprocess.run, [*argv, "--codec-endpoint", f"http://127.0.0.1:{port}",
                                                          "--codec-auth", f"Bearer {token}"],
                                        capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert instance in clear_text(json.loads(shown.stdout)) and comment in clear_text(json.loads(shown.stdout))
        without = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
        assert without.returncode == 0 and instance not in clear_text(json.loads(without.stdout))
    finally:
        stop.set()
        await serving
        await rotated.client.get_workflow_handle(eid).terminate(reason="test over")


@pytest.mark.timeout(120)
async def test_a_worker_without_the_key_fails_its_workflow_task_and_changes_nothing(
    aws: AwsAccount, run_worker: Any, address: str,
) -> None:
    instance = aws.instance()
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    task_queue = f"tq-codec-wrong-{uuid.uuid4()}"
    starter = Executions(await connect(settings_with(address, K1)), task_queue)
    eid = (await starter.start(request(rec))).execution_id
    handle = starter.client.get_workflow_handle(eid)
    try:
        async with run_worker(task_queue, K3):
            for _ in range(300):
                history = await handle.fetch_history()
                failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
                if failed:
                    break
                await asyncio.sleep(0.1)
            assert failed, "the worker without the key never failed the workflow task"
            assert not any(e.HasField("activity_task_scheduled_event_attributes") for e in history.events)
            failure = failed[0].workflow_task_failed_event_attributes.failure
            # The failure itself is sealed too (under the worker's key): open it with that key to read why.
            opened = await converter(K3).decode_failure(failure)
            assert "which this process does not have" in str(opened), opened
        assert aws.instance_state(instance)[0] == "running"
    finally:
        await handle.terminate(reason="test: the worker had the wrong key")
