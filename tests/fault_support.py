"""Shared by the fault tests: a moto server that logs every call it receives, and the fleet seeded in it.

The log is what "AWS" saw, counted on the server side: a mutation sent twice
shows up twice, whatever the worker believes it did.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import boto3
from moto.server import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    ThreadedMotoServer,
    create_backend_app,
)
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode
from werkzeug.serving import make_server

from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest, RollbackInput
from domain.policy import Role
from domain.recommendation import Recommendation
from starter.executions import Executions
from workflows import search_attributes as sa
from workflows.execution import ExecutionWorkflow

READ_PREFIXES = ("Describe", "Get", "List", "GET ", "HEAD ")
T = TypeVar("T")


@dataclass(frozen=True)
class AwsCall:
    operation: str
    """`Action` (query APIs such as EC2), the X-Amz-Target operation (JSON APIs), or `METHOD /path` (REST)."""
    params: tuple[tuple[str, str], ...]
    body: str
    at: float = field(default=0.0, compare=False)
    """time.monotonic() when AWS received it."""

    @property
    def mutating(self) -> bool:
        dry_run = dict(self.params).get("DryRun", "").lower() == "true"
        return not self.operation.startswith(READ_PREFIXES) and not dry_run

    def mentions(self, resource_id: str) -> bool:
        return any(resource_id in value for _, value in self.params) or resource_id in self.body

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The call with what differs between identical requests (client tokens, versions) left out."""
        return self.operation, tuple(p for p in self.params if p[0] not in ("ClientToken", "Version"))


class CountingMotoServer(ThreadedMotoServer):
    """moto's own threaded server with its WSGI app wrapped in a request log."""

    def __init__(self, port: int) -> None:
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{port}"
        self._calls: list[AwsCall] = []
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, self._logging(app), True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    def _logging(self, app: Callable[..., Any]) -> Callable[..., Any]:
        def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            path = str(environ.get("PATH_INFO", ""))
            if not path.startswith("/moto-api"):
                self._record(environ, path)
            return app(environ, start_response)

        return logged

    def _record(self, environ: dict[str, Any], path: str) -> None:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        text = body.decode("utf-8", "replace")
        if "x-www-form-urlencoded" in str(environ.get("CONTENT_TYPE", "")):
            params += parse_qsl(text, keep_blank_values=True)
        found = dict(params)
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        method = str(environ.get("REQUEST_METHOD", ""))
        operation = found.get("Action") or (target.rsplit(".", 1)[-1] if target else f"{method} {path}")
        call = AwsCall(operation, tuple(sorted(params)), text, at=time.monotonic())
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[AwsCall]:
        with self._lock:
            return list(self._calls)

    def forget(self) -> None:
        """Start counting afresh (after seeding, say)."""
        with self._lock:
            self._calls.clear()


def mutations_on(calls: Iterable[AwsCall], resource_id: str) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    """How many times each distinct mutating request naming the resource reached AWS."""
    return Counter(c.key() for c in calls if c.mutating and c.mentions(resource_id))


def operations_on(calls: Iterable[AwsCall], resource_id: str) -> list[str]:
    return sorted(c.operation for c in calls if c.mutating and c.mentions(resource_id))


@dataclass
class Planned:
    """One execution of a fault test and the outcome it must reach."""

    kind: str
    resource_id: str
    params: dict[str, Any]
    savings: float
    expected: str
    mutations: list[str]
    """The mutating operations AWS must receive for it, each exactly once."""
    steer: str | None = None
    """approve / reject while it awaits approval, rollback once it completed."""
    execution_id: str = ""
    notes: list[str] = field(default_factory=list)


def describe(calls: Iterable[AwsCall]) -> str:
    return json.dumps(Counter(c.operation for c in calls), sort_keys=True)


# ---- the fleet and its steering ----------------------------------------------------------------

ACCOUNT, REGION = "123456789012", "us-east-1"


class Fleet:
    """Seeds resources in the moto account, one per planned execution, through boto3."""

    def __init__(self, endpoint: str) -> None:
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        self.ami = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def instance(self, instance_type: str, **tags: str) -> str:
        spec: dict[str, Any] = {"ImageId": self.ami, "MinCount": 1, "MaxCount": 1, "InstanceType": instance_type}
        if tags:
            spec["TagSpecifications"] = [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return str(self.ec2.run_instances(**spec)["Instances"][0]["InstanceId"])

    def volume(self, size: int, volume_type: str) -> str:
        return str(self.ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=size,
                                          VolumeType=volume_type)["VolumeId"])

    def stop(self) -> Planned:
        return Planned("ec2.stop", self.instance("m5.large", env="dev"), {"expected_instance_type": "m5.large"},
                       70.08, "COMPLETED", ["StopInstances"])

    def delete(self, approve: bool = True) -> Planned:
        if not approve:
            return Planned("ebs.delete", self.volume(30, "gp2"), {"expected_size_gib": 30}, 3.0,
                           "REJECTED", [], steer="reject")
        return Planned("ebs.delete", self.volume(30, "gp2"), {"expected_size_gib": 30}, 3.0, "COMPLETED",
                       ["CreateSnapshot", "DeleteVolume"], steer="approve")

    def rightsize(self) -> Planned:
        return Planned("ec2.rightsize", self.instance("m5.2xlarge", env="staging"),
                       {"expected_instance_type": "m5.2xlarge", "target_instance_type": "m5.large"}, 210.24,
                       "COMPLETED", ["ModifyInstanceAttribute", "StartInstances", "StopInstances"], steer="approve")

    def gp3(self, rollback: bool = False) -> Planned:
        if rollback:
            return Planned("ebs.gp2_to_gp3", self.volume(100, "gp2"), {}, 2.0, "ROLLED_BACK",
                           ["ModifyVolume", "ModifyVolume"], steer="rollback")
        return Planned("ebs.gp2_to_gp3", self.volume(100, "gp2"), {}, 2.0, "COMPLETED", ["ModifyVolume"])

    def production(self) -> Planned:
        return Planned("ec2.stop", self.instance("m5.large", env="production"), {}, 70.08,
                       "REJECTED_BY_VALIDATION", [])


def request_for(planned: Planned, run: str, n: int, step_timeout: float = 5.0) -> ExecutionRequest:
    """Executions close when they complete (no rollback window) unless a rollback is planned;
    backups are kept, so they can be counted afterwards."""
    rec = Recommendation(id=f"{run}-{n}", customer_id="acme", account_id=ACCOUNT, region=REGION,
                         kind=planned.kind, resource_id=planned.resource_id, params=planned.params,
                         estimated_monthly_savings=planned.savings)
    window = timedelta(hours=1) if planned.steer == "rollback" else timedelta(0)
    return ExecutionRequest(recommendation=rec, requested_by="alice", options=ExecutionOptions(
        rollback_window=window, retain_backups=True, step_timeout=timedelta(seconds=step_timeout)))


async def patiently(call: Callable[[], Awaitable[T]], timeout: float = 180.0) -> T:
    """Retry a client call while the Temporal server is away (restarted, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except RPCError as exc:
            transient = exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
                                       RPCStatusCode.UNKNOWN, RPCStatusCode.CANCELLED)
            if not transient or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def drive(client: Client, task_queue: str, planned: Planned, run: str, n: int,
                step_timeout: float = 5.0) -> str:
    """Start one execution, steer it by signal (delivered even while no worker is up), and return
    the status it closed with ("FAILED: ..." when the workflow failed)."""
    executions = Executions(client, task_queue)
    started = await patiently(lambda: executions.start(request_for(planned, run, n, step_timeout)))
    planned.execution_id = started.execution_id
    handle = executions.handle(started.execution_id)
    steer = planned.steer
    while steer is not None:
        description = await patiently(handle.describe)
        status = description.typed_search_attributes.get(sa.EXECUTION_STATUS)
        if description.close_time is not None:
            break
        if status == "AWAITING_APPROVAL" and steer in ("approve", "reject"):
            signal = ExecutionWorkflow.approve_signal if steer == "approve" else ExecutionWorkflow.reject_signal
            attempt = ApprovalInput(actor="bob", role=Role.APPROVER, comment="fault test")
            await patiently(functools.partial(handle.signal, signal, attempt))
            steer = None
        elif status == "COMPLETED" and steer == "rollback":
            request = RollbackInput(actor="carol", reason="fault test")
            await patiently(functools.partial(handle.signal, ExecutionWorkflow.rollback_signal, request))
            steer = None
        else:
            await asyncio.sleep(0.5)
    try:
        view = await patiently(handle.result, timeout=900)
    except WorkflowFailureError as exc:
        return f"FAILED: {exc.cause}"
    return str(view.status.value)


def wrong_outcomes(planned: list[Planned], outcomes: list[str]) -> list[tuple[str, str, str, str]]:
    """(execution, kind, expected, got) for every execution that did not close as planned."""
    return [(p.execution_id, p.kind, p.expected, got)
            for p, got in zip(planned, outcomes, strict=True) if got != p.expected]


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as an operator or a supervisor would; SIGKILL only if it hangs. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
