"""The `reclaim` console script, run as a real subprocess against the test's own worker.

The CLI reaches the same Temporal dev server, task queue, SQLite read model and moto
account as the in-process worker of the `stack` fixture, so what it starts is really
executed. Subprocesses run in a thread so the worker on this event loop keeps going.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.actions.base import registry
from domain.execution import dry_run_id_for, execution_id_for
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request
from workflows.execution import ExecutionWorkflow

RECLAIM = Path(sys.executable).parent / "reclaim"
KINDS = {"ec2.stop", "ec2.rightsize", "ebs.delete", "ebs.gp2_to_gp3"}
#: What a crashing interpreter exits with (abort, segfault), via a shell or as a signal.
CRASH_CODES = {134, 139, -6, -11}


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"reclaim {' '.join(self.args)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Cli:
    """Runs `reclaim` with the environment an operator would have set up."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    async def __call__(self, *args: str, timeout: float = 90.0, **env: str) -> Run:
        proc = await asyncio.to_thread(
            subprocess.run, [str(RECLAIM), *args], env=self.env | env, cwd=self.cwd,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        run = Run(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        assert run.returncode not in CRASH_CODES and run.returncode >= 0, str(run)
        return run


def _base_env() -> dict[str, str]:
    drop = ("RECLAIM_", "TEMPORAL_")
    noise = {"DATABASE_URL", "AWS_PROFILE", "AWS_ENDPOINT_URL", "FORCE_COLOR", "COLUMNS", "LINES"}
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in noise}


@pytest.fixture
def cli(stack: Stack, temporal_env: WorkflowEnvironment, moto_endpoint: str, tmp_path: Path) -> Cli:
    env = _base_env() | {
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "RECLAIM_TASK_QUEUE": stack.task_queue,
        "DATABASE_URL": stack.store.url,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RECLAIM_USER": "alice",
    }
    return Cli(env, tmp_path)


def write(tmp_path: Path, rec: Recommendation | dict[str, Any] | str, name: str = "rec.json") -> Path:
    path = tmp_path / name
    if isinstance(rec, Recommendation):
        rec = rec.model_dump(mode="json", exclude_none=True)
    path.write_text(rec if isinstance(rec, str) else json.dumps(rec))
    return path


def expect(ok: bool, what: str, run: Run) -> None:
    assert ok, f"{what}\n{run}"


def succeeded(run: Run) -> Run:
    assert run.returncode == 0, str(run)
    assert "Traceback" not in run.stderr, str(run)
    return run


def failed(run: Run) -> str:
    """A refusal's outcome: non-zero exit, nothing on stdout, no crash; returns stderr."""
    assert run.returncode != 0, str(run)
    assert run.stdout.strip() == "", str(run)
    return run.stderr


def one_error_line(run: Run) -> str:
    """A refusal, told properly: exactly one `error: …` line on stderr, no traceback."""
    failed(run)
    expect("Traceback" not in run.stderr, "a traceback on stderr", run)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    expect(len(lines) == 1, "an error wrapped over several lines", run)
    assert lines[0].startswith("error: "), str(run)
    return lines[0]


def flat(text: str) -> str:
    """stderr with Rich's soft wrapping undone, to check content independently of layout."""
    return " ".join(text.split())


async def workflow_exists(stack: Stack, execution_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(execution_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def stored_status(stack: Stack, execution_id: str, want: S, timeout: float = 15.0) -> None:
    """The read model is written by activities: give it a moment to catch up."""
    deadline = time.monotonic() + timeout
    while True:
        stored = await stack.store.get_execution(execution_id)
        if stored is not None and stored.status is want:
            return
        assert time.monotonic() < deadline, f"read model has {stored and stored.status}, want {want}"
        await asyncio.sleep(0.1)


# ---- catalogue ---------------------------------------------------------------------------------


async def test_actions_json_prints_the_registry_with_permissions(cli: Cli) -> None:
    from activities.actions.base import registry

    run = succeeded(await cli("actions", "--json"))
    entries = {e["kind"]: e for e in run.json()}
    assert set(entries) == set(registry()) and set(entries) >= KINDS
    for kind, entry in entries.items():
        service = kind.split(".")[0].replace("ebs", "ec2").replace("eip", "ec2").replace("asg", "autoscaling")
        assert entry["permissions"] and any(p.startswith(f"{service}:") for p in entry["permissions"]), entry
        assert entry["params_schema"]["additionalProperties"] is False, kind
    assert "ec2:StopInstances" in entries["ec2.stop"]["permissions"]
    assert "ec2:ModifyInstanceAttribute" in entries["ec2.rightsize"]["permissions"]
    assert "ec2:DeleteVolume" in entries["ebs.delete"]["permissions"]
    assert "ec2:ModifyVolume" in entries["ebs.gp2_to_gp3"]["permissions"]


# ---- launching ---------------------------------------------------------------------------------


async def test_execute_wait_then_duplicate_status_and_list(
    cli: Cli, stack: Stack, aws: AwsAccount, tmp_path: Path
) -> None:
    instance = aws.instance("m5.large")
    customer = f"cli-{uuid.uuid4().hex[:8]}"
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"}, customer_id=customer)
    file = write(tmp_path, rec)
    execution_id = execution_id_for(rec.id)

    first = await cli("execute", str(file), "--wait", "--json")
    succeeded(first)
    assert first.json() == [{"execution_id": execution_id, "created": True, "status": "COMPLETED", "reason": None}]
    assert aws.instance_state(instance) == ("stopped", "m5.large")
    # The CLI saved the recommendation in the read model too.
    assert await stack.store.get_recommendation(rec.id) == rec

    again = await cli("execute", str(file), "--json")
    succeeded(again)
    assert again.json() == [{"execution_id": execution_id, "created": False}]

    status = await cli("status", execution_id, "--json")
    succeeded(status)
    view = status.json()
    assert view["execution_id"] == execution_id and view["recommendation_id"] == rec.id
    assert (view["kind"], view["resource_id"], view["status"]) == ("ec2.stop", instance, "COMPLETED")
    assert view["requested_by"] == "alice"
    assert view["rollback_available_until"] is not None
    assert [a["via"] for a in view["approvals"]] == []  # low risk: auto-approved
    assert "COMPLETED" in {entry["status"] for entry in view["log"]}

    await stored_status(stack, execution_id, S.COMPLETED)
    listed = await cli("list", "--json")
    succeeded(listed)
    rows = {row["execution_id"]: row for row in listed.json()}
    assert rows[execution_id]["status"] == "COMPLETED"
    assert "log" not in rows[execution_id]

    completed = await cli("list", "--status", "COMPLETED", "--customer", customer)
    succeeded(completed)
    assert execution_id in completed.stdout and instance in completed.stdout
    assert "COMPLETED" in completed.stdout


async def test_execute_wait_exits_non_zero_unless_the_outcome_asked_for_was_reached(
    cli: Cli, aws: AwsAccount, tmp_path: Path
) -> None:
    prod = aws.instance(tags={"env": "production"})
    run = await cli("execute", str(write(tmp_path, recommendation("ec2.stop", prod))), "--wait", "--json")
    assert run.returncode == 4, str(run)
    assert run.json()[0]["status"] == "REJECTED_BY_VALIDATION"
    assert aws.instance_state(prod)[0] == "running"
    helped = await cli("execute", "--help")
    assert "AWAITING_APPROVAL" in helped.stdout and "Exit codes" in helped.stdout


async def test_dry_run_plans_and_changes_nothing(cli: Cli, aws: AwsAccount, tmp_path: Path) -> None:
    instance = aws.instance()
    before = aws.describe_instance(instance)
    rec = recommendation("ec2.stop", instance)
    run = succeeded(await cli("execute", str(write(tmp_path, rec)), "--dry-run", "--wait", "--json"))
    [row] = run.json()
    assert (row["execution_id"], row["created"], row["status"]) == (dry_run_id_for(rec.id), True, "PLANNED")
    after = aws.describe_instance(instance)
    assert after["State"] == before["State"] and after["InstanceType"] == before["InstanceType"]


async def test_a_dry_run_started_under_the_old_id_is_still_found(
    cli: Cli, stack: Stack, aws: AwsAccount, tmp_path: Path
) -> None:
    # Before `dryrun-`, a dry run was `plan-<rec>`, as the items of plans begun before 2026-12-05 still are.
    rec = recommendation("ec2.stop", aws.instance(), customer_id=f"old-ids-{uuid.uuid4().hex[:8]}")
    legacy = execution_id_for(rec.id, dry_run=True)
    assert legacy == f"plan-{rec.id}" and dry_run_id_for(rec.id) == f"dryrun-{rec.id}"
    await stack.client.start_workflow(ExecutionWorkflow.run, request(rec, dry_run=True), id=legacy,
                                      task_queue=stack.task_queue)
    again = await stack.executions.start(request(rec, dry_run=True))  # while it runs: that one
    assert (again.execution_id, again.created) == (legacy, False)
    assert (await stack.executions.wait(legacy)).status is S.PLANNED

    shown = succeeded(await cli("status", legacy, "--json"))
    assert (shown.json()["execution_id"], shown.json()["status"]) == (legacy, "PLANNED")
    for _ in range(100):  # the read model catches up
        listed = succeeded(await cli("list", "--customer", rec.customer_id, "--json"))
        if [v["status"] for v in listed.json()] == ["PLANNED"]:
            break
        await asyncio.sleep(0.1)
    assert [v["execution_id"] for v in listed.json()] == [legacy]

    new = succeeded(await cli("execute", str(write(tmp_path, rec)), "--dry-run", "--wait", "--json"))
    [row] = new.json()
    assert (row["execution_id"], row["created"], row["status"]) == (dry_run_id_for(rec.id), True, "PLANNED")


# ---- steering ----------------------------------------------------------------------------------


async def test_approval_needs_a_second_person_with_an_approver_role(
    cli: Cli, stack: Stack, aws: AwsAccount, tmp_path: Path
) -> None:
    instance = aws.instance()
    rec = recommendation("ec2.stop", instance)
    run = await cli("execute", str(write(tmp_path, rec)), "--no-auto-approve", "--wait", "--json")
    assert run.returncode == 3, str(run)  # only a person can move it now
    [row] = run.json()
    execution_id = row["execution_id"]
    assert row["status"] == "AWAITING_APPROVAL"

    own = await cli("--as", "alice", "approve", execution_id)
    assert "alice" in one_error_line(own) and "cannot approve" in own.stderr
    refused = [a for a in await stack.store.list_approvals(execution_id) if not a.accepted]
    assert [(a.actor, a.decision.value, a.via) for a in refused] == [("alice", "approve", "update")]
    assert "cannot approve" in (refused[0].refusal or "")

    operator = await cli("--as", "carol", "approve", execution_id, RECLAIM_ROLE="operator")
    line = one_error_line(operator)
    assert "carol" in line and "role operator" in line
    refused = [a for a in await stack.store.list_approvals(execution_id) if not a.accepted]
    assert [(a.actor, a.role.value) for a in refused] == [("alice", "approver"), ("carol", "operator")]

    assert (await stack.executions.status(execution_id)).status is S.AWAITING_APPROVAL
    assert aws.instance_state(instance)[0] == "running"

    bob = await cli("--as", "bob", "approve", execution_id, "-m", "ok")
    succeeded(bob)
    assert bob.stdout.strip() == f"approved {execution_id} as bob"
    view = await stack.executions.wait(execution_id, until=frozenset({S.COMPLETED}))
    assert aws.instance_state(instance)[0] == "stopped"
    assert [(a.actor, a.accepted, a.via, a.comment) for a in view.approvals] == [("bob", True, "update", "ok")]


async def test_as_after_the_subcommand(cli: Cli) -> None:
    execution_id = f"exec-rec-{uuid.uuid4().hex[:12]}"
    run = await cli("approve", execution_id, "--as", "bob")
    expect(run.returncode != 2 and "No such option" not in run.stderr, "--as after the subcommand is refused", run)
    # Parsed: the command itself ran, and found nothing to approve.
    assert one_error_line(run) == f"error: no running execution {execution_id}"


async def test_reject(cli: Cli, stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)

    run = succeeded(await cli("--as", "bob", "reject", started.execution_id, "--reason", "x"))
    assert started.execution_id in run.stdout and "bob" in run.stdout
    view = await stack.executions.wait(started.execution_id)
    assert view.status is S.REJECTED
    assert view.reason == "rejected by bob: x"
    assert [(a.actor, a.decision.value, a.accepted, a.via) for a in view.approvals] == [
        ("bob", "reject", True, "update")
    ]
    assert aws.instance_state(instance)[0] == "running"
    expect(run.stdout.strip() == f"rejected {started.execution_id} as bob", "reject prints the wrong verb", run)


async def test_rollback_of_a_completed_stop_starts_the_instance_again(
    cli: Cli, stack: Stack, aws: AwsAccount
) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance)))
    assert (await stack.executions.wait(started.execution_id)).status is S.COMPLETED
    assert aws.instance_state(instance)[0] == "stopped"

    run = succeeded(await cli("rollback", started.execution_id, "-m", "still needed"))
    assert started.execution_id in run.stdout
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED}))
    assert view.status is S.ROLLED_BACK, view.reason
    assert aws.instance_state(instance)[0] == "running"


async def test_cancel_while_awaiting_approval(cli: Cli, stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)

    run = succeeded(await cli("cancel", started.execution_id))
    assert run.stdout.strip() == f"cancellation requested for {started.execution_id}"
    view = await stack.executions.wait(started.execution_id, until=frozenset({S.CANCELLED}))
    assert view.status is S.CANCELLED
    assert aws.instance_state(instance)[0] == "running"


async def test_rollback_refused_while_awaiting_approval(cli: Cli, stack: Stack, aws: AwsAccount) -> None:
    instance = aws.instance()
    started = await stack.executions.start(request(recommendation("ec2.stop", instance), auto_approve=False))
    await stack.executions.wait(started.execution_id)
    try:
        run = await cli("rollback", started.execution_id)
        assert "execution is AWAITING_APPROVAL" in flat(failed(run))
        assert (await stack.executions.status(started.execution_id)).status is S.AWAITING_APPROVAL
        assert aws.instance_state(instance)[0] == "running"
    finally:
        await stack.executions.cancel(started.execution_id)
    assert "AWAITING_APPROVAL" in one_error_line(run)


# ---- refusals ----------------------------------------------------------------------------------


def _valid(instance: str = "i-0123456789abcdef0") -> Recommendation:
    return recommendation("ec2.stop", instance)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        pytest.param("malformed", "not valid JSON"),
        pytest.param("missing", "no such file"),
        pytest.param("unknown_kind", "known kinds: " + ", ".join(registry())),
        pytest.param("extra_field", "surprise: Extra inputs are not permitted"),
    ],
)
async def test_invalid_input_is_refused_before_anything_starts(
    cli: Cli, stack: Stack, tmp_path: Path, case: str, expect: str
) -> None:
    rec = _valid()
    document = rec.model_dump(mode="json", exclude_none=True)
    if case == "malformed":
        file = write(tmp_path, json.dumps(document)[:-10])
    elif case == "missing":
        file = tmp_path / "nowhere.json"
    elif case == "unknown_kind":
        file = write(tmp_path, document | {"kind": "ec2.vaporize"})
    else:
        file = write(tmp_path, document | {"surprise": True})

    run = await cli("execute", str(file), "--wait", "--json")
    stderr = flat(failed(run))
    assert expect in stderr, str(run)
    if case != "unknown_kind":
        assert file.name in stderr, str(run)
    assert not await workflow_exists(stack, execution_id_for(rec.id))
    assert await stack.store.get_recommendation(rec.id) is None
    line = one_error_line(run)
    assert expect in line
    assert ("ec2.vaporize" if case == "unknown_kind" else file.name) in line


async def test_status_of_an_unknown_execution(cli: Cli) -> None:
    execution_id = f"exec-rec-{uuid.uuid4().hex[:12]}"
    run = await cli("status", execution_id, "--json")
    assert one_error_line(run) == f"error: no execution {execution_id}"


async def test_unreachable_temporal(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    rec = _valid()
    started = time.monotonic()
    run = await cli("execute", str(write(tmp_path, rec)), "--wait", "--json", TEMPORAL_ADDRESS="127.0.0.1:1")
    assert time.monotonic() - started < 60
    assert "cannot reach Temporal at 127.0.0.1:1" in flat(failed(run)), str(run)
    assert not await workflow_exists(stack, execution_id_for(rec.id))
    assert await stack.store.get_recommendation(rec.id) is None
    assert "cannot reach Temporal at 127.0.0.1:1" in one_error_line(run)


def test_token_prints_a_token_once_and_an_entry_that_authenticates_it(tmp_path: Path) -> None:
    from starter.api.auth import TokenStore

    result = subprocess.run([str(Path(sys.executable).parent / "reclaim"), "token", "--subject", "bob",
                             "--role", "approver", "--customer", "acme"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    token = lines[0].split(": ", 1)[1]
    entry = lines[-1].strip()
    assert token not in entry  # only the hash goes into the file
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n{entry}\n")
    principal = TokenStore.load(tokens).authenticate(token)
    assert principal is not None and (principal.subject, principal.role.value) == ("bob", "approver")
    assert TokenStore.load(tokens).authenticate(token + "x") is None


async def test_list_pages_with_cursor_and_all(cli: Cli, stack: Stack) -> None:
    from datetime import timedelta

    from tests.test_store import T0, view

    customer = f"pages-{uuid.uuid4().hex[:8]}"
    for n in range(5):
        seeded = view(n, customer_id=customer, status=S.COMPLETED, started_at=T0 + timedelta(minutes=n))
        await stack.store.upsert_execution(seeded.model_copy(update={"execution_id": f"exec-{customer}-{n}"}))
    first = succeeded(await cli("list", "--customer", customer, "--limit", "2", "--json"))
    assert [v["execution_id"] for v in first.json()] == [f"exec-{customer}-4", f"exec-{customer}-3"]
    cursor = first.stderr.split("--cursor", 1)[1].split()[0]
    second = succeeded(await cli("list", "--customer", customer, "--limit", "2", "--cursor", cursor, "--json"))
    assert [v["execution_id"] for v in second.json()] == [f"exec-{customer}-2", f"exec-{customer}-1"]
    everything = succeeded(await cli("list", "--customer", customer, "--all", "--json"))
    assert [v["execution_id"] for v in everything.json()] == [f"exec-{customer}-{n}" for n in range(4, -1, -1)]
    assert "--cursor" not in everything.stderr
    assert "--cursor" in one_error_line(await cli("list", "--cursor", "not-a-cursor"))


async def test_actions_json_summaries_are_whole_sentences(cli: Cli) -> None:
    entries = succeeded(await cli("actions", "--json")).json()
    for entry in entries:
        assert entry["summary"].endswith((".", ")")), entry
