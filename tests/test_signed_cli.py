"""The CLI and signed approvals: `reclaim approval-key` makes and shows the key; `reclaim approve` on the
embedded stack (straight to Temporal) signs when RECLAIM_APPROVAL_SIGNING_KEY is set here, and is refused
by a run whose policy carries the key when it is not.

In process (typer's runner, in a thread: the command runs its own event loop) against the dev server.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from domain.policy import Policy
from domain.status import ExecutionStatus as S
from runtime.approval_key import parse_private_key
from starter.cli import app
from tests.conftest import AwsAccount, Stack
from tests.helpers import recommendation, request

PREFIX = "RECLAIM_APPROVAL_PUBLIC_KEY="


def reclaim(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_approval_key_makes_a_key_once_and_prints_its_public_key(tmp_path: Path) -> None:
    path = tmp_path / "approval.pem"
    made = reclaim("approval-key", str(path))
    assert made.exit_code == 0, made.output
    assert f"wrote a new Ed25519 signing key to {path}" in made.stderr
    assert made.stdout.startswith(PREFIX) and made.stdout.count("\n") == 1
    assert path.stat().st_mode & 0o777 == 0o600
    key = path.read_text()
    parse_private_key(key)
    again = reclaim("approval-key", str(path))  # an existing key is read, never replaced
    assert again.exit_code == 0 and again.stdout == made.stdout and again.stderr == ""
    assert path.read_text() == key and key.splitlines()[1] not in made.output + again.output
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    bad = reclaim("approval-key", str(tmp_path / "bad.pem"))
    assert bad.exit_code == 1 and "not a readable unencrypted PEM private key" in bad.stderr
    assert "Traceback" not in bad.output


async def test_reclaim_approve_signs_with_the_local_key(stack: Stack, aws: AwsAccount, tmp_path: Path) -> None:
    key_file = tmp_path / "approval.pem"
    public = reclaim("approval-key", str(key_file)).stdout.strip().removeprefix(PREFIX)
    instance = aws.instance()
    req = request(recommendation("ec2.stop", instance), auto_approve=False).model_copy(
        update={"policy": Policy(approval_public_keys=[public])})
    eid = (await stack.executions.start(req)).execution_id
    assert (await stack.executions.wait(eid)).status is S.AWAITING_APPROVAL
    env = {"TEMPORAL_ADDRESS": stack.client.service_client.config.target_host, "RECLAIM_TASK_QUEUE": stack.task_queue,
           "DATABASE_URL": f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}", "RECLAIM_USER": "bob",
           "RECLAIM_ROLE": "approver", "RECLAIM_API_URL": "", "RECLAIM_API_TOKEN": ""}

    unsigned = await asyncio.to_thread(reclaim, "approve", eid, "-m", "ok", **env)
    assert unsigned.exit_code == 1 and "unsigned: this execution accepts only decisions signed by Reclaim" in unsigned.stderr
    assert (await stack.executions.status(eid)).status is S.AWAITING_APPROVAL

    signed = await asyncio.to_thread(reclaim, "approve", eid, "-m", "ok", **env,
                                     RECLAIM_APPROVAL_SIGNING_KEY=f"file:{key_file}",
                                     RECLAIM_APPROVAL_PUBLIC_KEY=public)
    assert signed.exit_code == 0, signed.output
    assert f"approved {eid} as bob" in signed.stdout
    view = await stack.executions.wait(eid, until=frozenset({S.COMPLETED}))
    assert [(a.actor, a.accepted) for a in view.approvals] == [("bob", True)]
    assert aws.instance_state(instance)[0] == "stopped"
