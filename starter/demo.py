"""`reclaim demo`: the whole story against a seeded mock AWS account.

An in-process moto server plays AWS (so nothing real is touched and nothing is
downloaded), the embedded stack runs the executions, and each scripted outcome
is checked: the exit code says whether Reclaim behaved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from rich.console import Console

from activities.aws import SessionFactory
from activities.faults import FaultInjector, FaultRule
from domain.execution import ApprovalInput, ExecutionOptions, ExecutionRequest, ExecutionView, RollbackInput
from domain.policy import Role
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from runtime import logmask
from runtime.settings import Settings
from starter.api.auth import TokenEntry
from starter.demo_receiver import SECRET_ENV, DemoReceiver, demo_receiver, notify_file
from starter.devserver import free_port, port_open, webui_executions_path
from starter.executions import Executions
from starter.stack import api_running, embedded_stack, wait_for_interrupt

ACCOUNT = "123456789012"
REGION = "us-east-1"


@dataclass
class Scene:
    title: str
    recommendation: Recommendation
    expected: S
    dry_run: bool = False
    steer: Callable[[Executions, str], Awaitable[None]] | None = None
    asks: bool = False  # waits for a person: its approval request must reach the webhook receiver


class DemoAccount:
    """A wasteful account: idle, oversized and production instances, forgotten volumes."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        self.ami = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def instance(self, instance_type: str, **tags: str) -> str:
        return str(self.ec2.run_instances(
            ImageId=self.ami, MinCount=1, MaxCount=1, InstanceType=instance_type,
            **_tagging("instance", tags),
        )["Instances"][0]["InstanceId"])

    def bucket(self, name: str, **tags: str) -> str:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=self.endpoint)
        s3.create_bucket(Bucket=name)
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
        return name

    def log_group(self, name: str, **tags: str) -> str:
        boto3.client("logs", region_name=REGION, endpoint_url=self.endpoint).create_log_group(
            logGroupName=name, tags=tags
        )
        return name

    def volume(self, size: int, volume_type: str, **tags: str) -> str:
        return str(self.ec2.create_volume(
            AvailabilityZone=f"{REGION}a", Size=size, VolumeType=volume_type, **_tagging("volume", tags),
        )["VolumeId"])


def _tagging(resource_type: str, tags: dict[str, str]) -> dict[str, Any]:
    if not tags:
        return {}
    return {"TagSpecifications": [
        {"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    ]}


def _rec(run: str, name: str, kind: str, resource: str, savings: float, **params: Any) -> Recommendation:
    return Recommendation(
        id=f"demo-{run}-{name}", customer_id="acme", account_id=ACCOUNT, region=REGION, kind=kind,
        resource_id=resource, params=params, estimated_monthly_savings=savings, source="demo",
    )


def _approve(actor: str) -> Callable[[Executions, str], Awaitable[None]]:
    async def steer(executions: Executions, execution_id: str) -> None:
        await executions.wait(execution_id)
        await executions.decide(execution_id, True, ApprovalInput(actor=actor, role=Role.APPROVER,
                                                                  comment="checked the graphs"))
    return steer


async def _reject(executions: Executions, execution_id: str) -> None:
    await executions.wait(execution_id)
    await executions.decide(execution_id, False, ApprovalInput(actor="bob", role=Role.APPROVER,
                                                               comment="QA still uses this volume"))


async def _roll_back(executions: Executions, execution_id: str) -> None:
    view = await executions.wait(execution_id)
    if view.status is S.COMPLETED:
        await executions.rollback(execution_id, RollbackInput(actor="carol", reason="latency went up"))


def scenes(account: DemoAccount, run: str) -> tuple[list[Scene], list[FaultRule]]:
    idle = account.instance("m5.large", Name="idle-batch-runner", env="dev")
    oversized = account.instance("m5.2xlarge", Name="reporting", env="staging")
    prod = account.instance("m5.large", Name="checkout", Environment="production")
    flaky = account.instance("c5.2xlarge", Name="etl", env="staging")
    spare = account.instance("t3.large", Name="sandbox", env="dev")
    orphan = account.volume(100, "gp2", Name="old-build-cache")
    kept = account.volume(50, "gp2", Name="qa-fixtures")
    gp2 = account.volume(500, "gp2", Name="analytics-scratch")
    bucket = account.bucket(f"acme-logs-archive-{run}", team="platform")
    # Named per run: the demo's store outlives it, and a second run must not meet the first one's cooldown.
    logs = account.log_group(f"/aws/lambda/ingest-{run}", team="data")
    faults = [FaultRule("StartInstances", "InsufficientInstanceCapacity", resource=flaky, times=1,
                        message="We currently do not have sufficient c5.large capacity (injected by the demo)")]
    return [
        Scene("idle instance stopped (auto-approved)",
              _rec(run, "stop-idle", "ec2.stop", idle, 70.08, expected_instance_type="m5.large"), S.COMPLETED),
        Scene("oversized instance rightsized after bob approves alice's request",
              _rec(run, "rightsize", "ec2.rightsize", oversized, 210.24,
                   expected_instance_type="m5.2xlarge", target_instance_type="m5.large"),
              S.COMPLETED, steer=_approve("bob"), asks=True),
        Scene("unattached volume snapshotted, then deleted after approval",
              _rec(run, "delete-orphan", "ebs.delete", orphan, 10.0, expected_size_gib=100),
              S.COMPLETED, steer=_approve("bob"), asks=True),
        Scene("volume deletion rejected by bob",
              _rec(run, "delete-kept", "ebs.delete", kept, 5.0, expected_size_gib=50), S.REJECTED, steer=_reject,
              asks=True),
        Scene("production instance refused by validation",
              _rec(run, "stop-prod", "ec2.stop", prod, 70.08), S.REJECTED_BY_VALIDATION),
        Scene("rightsize fails to start (no capacity): compensated back to c5.2xlarge",
              _rec(run, "rightsize-flaky", "ec2.rightsize", flaky, 180.0,
                   expected_instance_type="c5.2xlarge", target_instance_type="c5.large"),
              S.ROLLED_BACK, steer=_approve("bob"), asks=True),
        Scene("gp2 -> gp3 completed, then rolled back on carol's request",
              _rec(run, "gp3", "ebs.gp2_to_gp3", gp2, 10.0), S.ROLLED_BACK, steer=_roll_back),
        Scene("S3 bucket gets a Standard-IA transition after 30 days (auto-approved)",
              _rec(run, "s3-lifecycle", "s3.lifecycle", bucket, 54.0, storage_class="STANDARD_IA",
                   transition_days=30), S.COMPLETED),
        Scene("log group kept forever gets 30-day retention after approval (old events go)",
              _rec(run, "logs-retention", "logs.retention", logs, 12.5, retention_days=30), S.COMPLETED,
              steer=_approve("bob"), asks=True),
        Scene("dry run: permissions checked, nothing changed",
              _rec(run, "dry-run", "ec2.stop", spare, 60.74), S.PLANNED, dry_run=True),
    ], faults


async def play(executions: Executions, scene: Scene, policy: Any) -> ExecutionView:
    request = ExecutionRequest(
        recommendation=scene.recommendation, requested_by="alice", policy=policy,
        options=ExecutionOptions(dry_run=scene.dry_run),
    )
    started = await executions.start(request)
    if scene.steer is not None:
        await scene.steer(executions, started.execution_id)
    final = frozenset({scene.expected}) | (frozenset({S.ROLLBACK_FAILED, S.FAILED, S.REJECTED_BY_VALIDATION,
                                                     S.EXPIRED, S.REJECTED, S.CANCELLED, S.PLANNED}))
    return await executions.wait(started.execution_id, until=final, timeout=180)


async def run_demo(settings: Settings, *, port: int, ui_port: int, keep_up: bool, console: Console) -> bool:
    from moto.server import ThreadedMotoServer

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "demo"  # moto accepts anything; never the operator's real keys
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    # moto's request log and the warning for the scripted capacity failure are not the story:
    # the summary table is. (`reclaim dev` and `reclaim worker` keep both.)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto_port}"
    settings.home = settings.home / "demo"
    settings.database_url = None
    if port_open("127.0.0.1", ui_port):
        ui_port = free_port()
    codec_port = settings.codec_server_port if not port_open("127.0.0.1", settings.codec_server_port) else free_port()
    run = time.strftime("%Y%m%d%H%M%S")
    # The receiver's key, fresh each run: in this process's environment (the notify file names it,
    # the delivery activity reads it at send time) and masked in its logs, never in a file or a history.
    hook_secret = secrets.token_urlsafe(24)
    os.environ[SECRET_ENV] = hook_secret
    logmask.register_secret(hook_secret)
    try:
        account = DemoAccount(endpoint)
        story, rules = scenes(account, run)
        sessions = SessionFactory(endpoint_url=endpoint, session_hooks=[FaultInjector(rules).install])
        tokens = demo_tokens()
        settings.api_tokens = json.dumps([t.model_dump(exclude_none=True) for t in tokens])
        if settings.worker_metrics_port is None:
            settings.worker_metrics_port = 0
        with demo_receiver(hook_secret, settings.home / "webhook.jsonl") as receiver:
            settings.notify_file = notify_file(settings.home, receiver)
            async with embedded_stack(settings, port=port, ui_port=ui_port, sessions=sessions,
                                      codec_port=codec_port) as stack, \
                    api_running(stack, settings.api_port, any_port_if_taken=True) as api_url:
                console.print(f"Temporal Web UI: [bold]{stack.server.ui_url}[/bold]  (mock AWS at {endpoint})")
                if stack.codec is not None:
                    console.print(f"Payloads encrypted; the Web UI decodes through {stack.codec.url}; stock CLI: "
                                  f"{stack.codec.cli_flags()}", soft_wrap=True)
                console.print(f"Notifications: every event goes to a local webhook receiver at "
                              f"[bold]{receiver.hook_url}[/bold] (signed; the notify file: {settings.notify_file})",
                              soft_wrap=True)
                executions = Executions(stack.client, settings.task_queue, signer=settings.approval_signer())
                policy = settings.policy()
                views = await asyncio.gather(*(play(executions, scene, policy) for scene in story))
                ok = _summary(console, story, list(views), stack.server.ui_url)
                ok &= await told(console, receiver, story, list(views), stack.metrics_url)
                _print_api(console, api_url, tokens)
                if keep_up:
                    walk = write_walkthrough(account, settings, stack.server.address, run)
                    console.print(f"The stack stays up for exploring; Ctrl-C to stop. README walkthrough, in a "
                                  f"second terminal: [bold]source {walk / 'env.sh'}[/bold]", soft_wrap=True)
                    await wait_for_interrupt()
                return ok
    finally:
        moto.stop()


def write_walkthrough(account: DemoAccount, settings: Settings, address: str, run: str) -> Path:
    """Resources left for a person to try the README's walkthrough on, their recommendations,
    and an env.sh that points a second terminal's CLI at this demo. Ids carry the run, so the
    walkthrough works again on the next run (the demo's history and store outlive it)."""
    walk = (settings.home / "walkthrough").resolve()
    walk.mkdir(parents=True, exist_ok=True)
    files = {
        "rightsize": _rec(f"walk-{run}", "rightsize", "ec2.rightsize", account.instance("m5.2xlarge", Name="bi-etl"),
                          210.24, expected_instance_type="m5.2xlarge", target_instance_type="m5.large"),
        "delete": _rec(f"walk-{run}", "delete", "ebs.delete", account.volume(80, "gp2", Name="qa-scratch"), 8.0,
                       expected_size_gib=80),
        "stop": _rec(f"walk-{run}", "stop", "ec2.stop", account.instance("m5.large", Name="batch"), 70.08,
                     expected_instance_type="m5.large"),
    }
    for name, rec in files.items():
        (walk / f"{name}.json").write_text(rec.model_dump_json(exclude_none=True, indent=2) + "\n")
    env = {"TEMPORAL_ADDRESS": address, "RECLAIM_HOME": str(settings.home.resolve()),
           "RECLAIM_TASK_QUEUE": settings.task_queue, "WALK": f"demo-walk-{run}", "WALKTHROUGH": str(walk)}
    if settings.encrypt:  # the keys: RECLAIM_HOME's codec-keys, or whatever the demo was given
        env["RECLAIM_ENCRYPT"] = "true"
    (walk / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return walk


def demo_tokens() -> list[TokenEntry]:
    """Fresh tokens each run (never fixed secrets in the code); they live as long as the demo."""
    people = [("alice", Role.OPERATOR), ("bob", Role.APPROVER), ("carol", Role.VIEWER), ("root", Role.ADMIN)]
    return [TokenEntry(subject=name, role=role, customers=["acme"] if role is not Role.ADMIN else ["*"],
                       token=secrets.token_urlsafe(24)) for name, role in people]


def _print_api(console: Console, api_url: str, tokens: list[TokenEntry]) -> None:
    console.print(f"REST API: [bold]{api_url}[/bold]  (OpenAPI: {api_url}/docs); demo tokens, valid while it runs:")
    for t in tokens:
        console.print(f"  {t.subject:<6} {t.role.value:<9} {', '.join(t.customers):<5} {t.token}")
    console.print(f"  e.g. curl -H 'Authorization: Bearer {tokens[2].token}' {api_url}/api/v1/executions")


async def told(console: Console, receiver: DemoReceiver, story: list[Scene], views: list[ExecutionView],
               metrics_url: str | None, timeout: float = 30) -> bool:
    """Did every approval-needing scene's request reach the webhook receiver (signature verified)?"""
    asking = [view.execution_id for scene, view in zip(story, views, strict=True) if scene.asks]
    missing = await receiver.missing("approval_requested", asking, timeout=timeout)
    got = receiver.deliveries()
    verified = [d for d in got if d.verified]
    console.print(f"Webhook receiver got {len(verified)} signed notifications so far "
                  f"({', '.join(sorted({str(d.event) for d in verified}))}); "
                  f"approval requests of {len(asking) - len(missing)}/{len(asking)} approval-needing scenes",
                  soft_wrap=True)
    console.print(f"  what it got: [bold]curl {receiver.url}/[/bold]  or  {receiver.log}", soft_wrap=True)
    if metrics_url is not None:
        console.print(f"  deliveries counted by the worker: {metrics_url}", soft_wrap=True)
    if missing:
        console.print(f"[red]no approval request reached the receiver for {', '.join(sorted(missing))}[/red]",
                      soft_wrap=True)
    return not missing


def _summary(console: Console, story: list[Scene], views: list[ExecutionView], ui_url: str | None) -> bool:
    from rich.table import Table

    table = Table("execution", "kind", "resource", "status", "est./mo", "actual/mo", "scene", title="Reclaim demo")
    ok = True
    for scene, view in zip(story, views, strict=True):
        good = view.status is scene.expected
        ok &= good
        table.add_row(view.execution_id, view.kind, view.resource_id,
                      f"[green]{view.status.value}[/]" if good
                      else f"[red]{view.status.value} (expected {scene.expected.value})[/]",
                      f"${view.estimated_monthly_savings:,.2f}",
                      "-" if view.actual_monthly_savings is None else f"${view.actual_monthly_savings:,.2f}",
                      scene.title)
    console.print(table)
    if ui_url:
        console.print(f"Every step is in the Temporal Web UI (executions only): {ui_url}{webui_executions_path()}",
                      soft_wrap=True)
    console.print("[green]all outcomes as expected[/green]" if ok else "[red]unexpected outcomes above[/red]")
    return ok
