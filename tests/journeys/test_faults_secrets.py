"""No secret in any history or log line: AWS access and secret key, session token, API bearer token,
the approval signing key, and every notification channel's: the webhook's HMAC key, the Slack and
Teams incoming-webhook URLs, the Slack bot token (chat API), the SMTP password (and its AUTH encodings), the Slack signing secret
and a Slack response_url.

The worker (`python -m worker`) and the API (`reclaim api`) run as processes at DEBUG
(RECLAIM_LOG_LEVEL), so botocore logs every request's headers, session token and
signing key id included: the log masking (runtime/logmask.py) must hide them. Their
environment holds recognisable fake credentials; executions go
through the API with a bearer token, including refusals and a rejected token. The worker's
notify file sends everything to a webhook, Slack, Teams (a local HTTP receiver), Slack's chat API
(a local Web API checking the bearer token) and e-mail (aiosmtpd, with auth), each secret under an environment name that does not look like one; the
API answers a signed Slack callback (refused: the user is unknown), its replay and a tampered one.
Afterwards every workflow history on the task queue (payloads decoded), every
captured log line, the CLI's output and the read-model database are searched.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import Client

from activities.notify.signature import HEADER, verify_signature
from domain.signing import public_key_text
from starter.api.slack import signature
from starter.devserver import free_port, port_open
from tests.conftest import AwsAccount
from tests.fault_support import stop_process
from tests.helpers import ACCOUNT, REGION, eventually
from tests.notify_support import HttpReceiver, MailBox, SlackApi, slack_api, smtp_receiver
from workflows.execution import ExecutionWorkflow

ROOT = Path(__file__).parents[2]
SMTP_PASSWORD = f"scan-smtp-{uuid.uuid4().hex}"
# Not xoxb-shaped: the worker must mask it because the notify file names it, not by its look.
SLACK_BOT_TOKEN = f"scan-slackbot-{uuid.uuid4().hex}"
SLACK_BOT_CHANNEL = "C0SCANBOT1"
RECLAIM = str(Path(sys.executable).parent / "reclaim")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def readable(history_json: str) -> str:
    """The history as text with every base64 field (payload data, metadata) decoded beside it."""
    parts = [history_json]
    for text in _strings(json.loads(history_json)):
        with contextlib.suppress(binascii.Error, ValueError):
            parts.append(base64.b64decode(text, validate=True).decode("utf-8", "replace"))
    return "\n".join(parts)


def _process(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


async def _status_is(client: Client, execution_id: str, status: str) -> bool:
    view = await client.get_workflow_handle_for(ExecutionWorkflow.run, execution_id).query(ExecutionWorkflow.status)
    return view.status.value == status


@pytest.fixture
def mailbox() -> Iterator[tuple[MailBox, int]]:
    with smtp_receiver({"reclaim": SMTP_PASSWORD}) as got:
        yield got


@pytest.fixture
def slackbot() -> Iterator[SlackApi]:
    with slack_api(SLACK_BOT_TOKEN, {SLACK_BOT_CHANNEL}) as api:
        yield api


def _notify_file(folder: Path, hook_url: str, smtp_port: int, slack_api_url: str) -> Path:
    path = folder / "notify.yaml"
    path.write_text(f"""
channels:
  hook: {{type: webhook, url: "{hook_url}", secret: env:T_SCAN_HOOK}}
  slack: {{type: slack, webhook_url: env:T_SCAN_SLACK}}
  teams: {{type: teams, webhook_url: env:T_SCAN_TEAMS}}
  slackbot: {{type: slack, bot_token: env:T_SCAN_BOT, channel: {SLACK_BOT_CHANNEL}, api_url: "{slack_api_url}"}}
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, starttls: false, username: reclaim,
         password: env:T_SCAN_SMTP, sender: reclaim@example.com, to: [finops@example.com]}}
rules:
  - channels: [hook, slack, teams, slackbot, mail]
""")
    return path


def _slack_callback(signing_secret: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = ("payload=" + urllib.parse.quote(json.dumps(payload))).encode()
    stamp = str(int(time.time()))
    return body, {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature(signing_secret, stamp, body),
                  "Content-Type": "application/x-www-form-urlencoded"}


def _rec(n: str, kind: str, resource: str, **params: Any) -> dict[str, Any]:
    return {"id": f"secret-{n}-{uuid.uuid4().hex[:8]}", "customer_id": "acme", "account_id": ACCOUNT,
            "region": REGION, "kind": kind, "resource_id": resource, "params": params,
            "estimated_monthly_savings": 10.0}


@pytest.mark.timeout(240)
async def test_no_secret_reaches_a_history_a_log_line_or_the_store(
    client: Client, aws: AwsAccount, tmp_path: Path, receiver: HttpReceiver, mailbox: tuple[MailBox, int],
    slackbot: SlackApi,
) -> None:
    marker = uuid.uuid4().hex
    secrets = {
        "AWS access key": "AKIAFAULTTEST0000001",
        "AWS secret key": f"FaultSecretAccessKey{marker}",
        "AWS session token": f"FaultSessionToken{marker}",
        "API bearer token": f"fault-bearer-{marker}",
        "approver bearer token": f"fault-approver-bearer-{marker}",
        "webhook HMAC secret": f"scan-hmac-{marker}",
        "Slack webhook URL's secret path": f"slackpath{marker}",
        "Teams webhook URL's secret path": f"teamspath{marker}",
        "Slack bot token": SLACK_BOT_TOKEN,
        "SMTP password": SMTP_PASSWORD,
        "SMTP AUTH PLAIN": base64.b64encode(b"\0reclaim\0" + SMTP_PASSWORD.encode()).decode(),
        "SMTP AUTH LOGIN": base64.b64encode(SMTP_PASSWORD.encode()).decode(),
        "Slack signing secret": f"scan-signing-{marker}",
        "Slack response_url's secret path": f"responsepath{marker}",
    }
    # Signed approvals on: the API alone holds the private key (the worker never needs it); the
    # approval below is signed with it, and neither its PEM nor its raw bytes may show anywhere.
    signing_key = Ed25519PrivateKey.generate()
    pem = signing_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    secrets["approval signing key (PEM body)"] = pem.splitlines()[1]
    secrets["approval signing key (raw, base64)"] = base64.b64encode(
        signing_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
    box, smtp_port = mailbox
    slack_path, teams_path = f"/services/T0SCAN/B0SCAN/slackpath{marker}", f"/teams/teamspath{marker}"
    response_path = f"/actions/T0SCAN/responsepath{marker}"
    wrong_token = f"fault-wrong-bearer-{marker}"
    task_queue, port, database = f"secrets-{uuid.uuid4()}", free_port(), tmp_path / "reclaim.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECLAIM_", "TEMPORAL_"))}
    env.update(
        AWS_ACCESS_KEY_ID=secrets["AWS access key"], AWS_SECRET_ACCESS_KEY=secrets["AWS secret key"],
        RECLAIM_LOG_LEVEL="DEBUG",
        AWS_SESSION_TOKEN=secrets["AWS session token"], AWS_ENDPOINT_URL=aws.endpoint,
        TEMPORAL_ADDRESS=client.service_client.config.target_host, RECLAIM_TASK_QUEUE=task_queue,
        DATABASE_URL=f"sqlite:///{database}",
        RECLAIM_NOTIFY_FILE=str(_notify_file(tmp_path, f"{receiver.url}/hook", smtp_port, slackbot.url)),
        T_SCAN_HOOK=secrets["webhook HMAC secret"], T_SCAN_SLACK=receiver.url + slack_path,
        T_SCAN_TEAMS=receiver.url + teams_path, T_SCAN_SMTP=SMTP_PASSWORD, T_SCAN_BOT=SLACK_BOT_TOKEN,
        RECLAIM_SLACK_SIGNING_SECRET=secrets["Slack signing secret"],
        RECLAIM_API_TOKENS=json.dumps({"tokens": [
            {"subject": "ci", "role": "admin", "customers": ["*"], "token": secrets["API bearer token"]},
            {"subject": "bob", "role": "approver", "customers": ["acme"],
             "token": secrets["approver bearer token"]}]}),
    )
    logs = {"worker": tmp_path / "worker.log", "api": tmp_path / "api.log"}
    worker = _process([sys.executable, "-m", "worker"], env, logs["worker"])
    api = _process([RECLAIM, "api", "--port", str(port)], {
        **env, "RECLAIM_APPROVAL_PUBLIC_KEY": public_key_text(signing_key),
        "RECLAIM_APPROVAL_SIGNING_KEY": "env:RECLAIM_TEST_APPROVAL_SIGNING_KEY",
        "RECLAIM_TEST_APPROVAL_SIGNING_KEY": pem}, logs["api"])
    cli_output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert api.poll() is None and time.monotonic() < deadline, logs["api"].read_text()
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {secrets['API bearer token']}"}
        recs = [
            _rec("stop", "ec2.stop", aws.instance(), expected_instance_type="m5.large"),
            _rec("delete", "ebs.delete", aws.volume(size=20), expected_size_gib=20),
            _rec("prod", "ec2.stop", aws.instance(tags={"env": "production"})),
            _rec("gone", "ec2.stop", "i-0000000000000dead"),
            _rec("drift", "ec2.rightsize", aws.instance(), expected_instance_type="m5.4xlarge",
                 target_instance_type="m5.large"),
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
            refused = await http.get("/api/v1/executions", headers={"Authorization": f"Bearer {wrong_token}"})
            assert refused.status_code == 401
            ids = []
            for rec in recs:
                answer = await http.post("/api/v1/executions/execute", json={"recommendation": rec})
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["execution_id"])
            settled = {"COMPLETED", "REJECTED_BY_VALIDATION", "AWAITING_APPROVAL", "FAILED", "ROLLED_BACK"}
            deadline = time.monotonic() + 90
            while True:
                views = [(await http.get(f"/api/v1/executions/{i}")) for i in ids]
                statuses = [v.json()["status"] if v.status_code == 200 else None for v in views]
                if all(s in settled for s in statuses) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            assert statuses == ["COMPLETED", "AWAITING_APPROVAL", "REJECTED_BY_VALIDATION",
                                "REJECTED_BY_VALIDATION", "REJECTED_BY_VALIDATION"], statuses
            # A Slack click from someone not in the identities file: signed, so answered (refused, through
            # the response_url); the same callback again and a tampered one: 401.
            click = {"type": "block_actions", "user": {"id": "U0SCANNER"},
                     "actions": [{"action_id": "reclaim_approve", "value": ids[1]}],
                     "response_url": receiver.url + response_path}
            body, signed = _slack_callback(secrets["Slack signing secret"], click)
            slack_url = "/api/v1/integrations/slack/actions"
            assert (await http.post(slack_url, content=body, headers=signed)).status_code == 200
            assert (await http.post(slack_url, content=body, headers=signed)).status_code == 401
            tampered = body.replace(b"U0SCANNER", b"U0SCANNEX")
            assert (await http.post(slack_url, content=tampered, headers=signed)).status_code == 401
            approved = await http.post(f"/api/v1/executions/{ids[1]}/approve", json={"comment": "ok"}, headers={
                "Authorization": "Bearer " + secrets["approver bearer token"]})
            assert approved.status_code == 200, approved.text  # signed by the API: its policy has the key
        cli_env = {**env, "RECLAIM_API_URL": f"http://127.0.0.1:{port}", "RECLAIM_API_TOKEN": secrets["API bearer token"]}
        for argv in ([RECLAIM, "status", ids[1], "--json"], [RECLAIM, "list"],
                     [RECLAIM, "status", "exec-missing"], [RECLAIM, "execute", str(tmp_path / "missing.json")]):
            done = subprocess.run(argv, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
            cli_output.append(done.stdout + done.stderr)
        # Completed executions stay open for their rollback window: their histories are read as they stand.
        await eventually(lambda: _status_is(client, ids[1], "COMPLETED"), timeout=90)
        told = f"{ids[1]}:completed:0"
        deadline = time.monotonic() + 60
        while (sum(told in r.body.decode() for r in receiver.requests) < 3
               or not any(m.message["X-Reclaim-Delivery"] == told for m in box.mails)
               or not any(told in r.body.decode() for r in slackbot.requests)
               or not any(r.path == response_path for r in receiver.requests)):
            assert time.monotonic() < deadline, [r.path for r in receiver.requests]
            await asyncio.sleep(0.2)
    finally:
        stop_process(api)
        stop_process(worker)

    histories = {}
    async for found in client.list_workflows(f'TaskQueue="{task_queue}"'):
        history = await client.get_workflow_handle(found.id, run_id=found.run_id).fetch_history()
        histories[found.id] = readable(history.to_json())
    texts = {**{f"history of {k}": v for k, v in histories.items()},
             **{f"{name} log": path.read_text(errors="replace") for name, path in logs.items()},
             "CLI output": "\n".join(cli_output), "read model": database.read_bytes().decode("latin-1")}

    # The search is not vacuous: what should be there is found the same way.
    assert len(histories) >= len(ids) + 2  # the executions and their resource leases
    assert all(i in histories for i in ids)
    # (the input names the resource; the ReclaimStatus search attribute, decoded, says COMPLETED)
    assert recs[0]["resource_id"] in histories[ids[0]] and '"COMPLETED"' in histories[ids[0]]
    assert "worker polling task queue" in texts["worker log"]
    # the approval went through signed: the run's policy has the public key, the update its signature
    assert public_key_text(signing_key) in histories[ids[1]] and '"signature":"' in histories[ids[1]]
    # Every channel's secret was used: the receivers got what only those secrets reach or sign.
    paths = {r.path for r in receiver.requests}
    assert {"/hook", slack_path, teams_path, response_path} <= paths, paths
    hook = next(r for r in receiver.requests if r.path == "/hook")
    assert verify_signature(secrets["webhook HMAC secret"], hook.headers[HEADER], hook.body, time.time())
    assert any(m.message["X-Reclaim-Delivery"] == f"{ids[1]}:approval_requested:0" for m in box.mails)
    # the local Slack Web API posted only with the right bearer token; the delivery result's receipt
    # (Slack's channel and ts) is in the history, the token is not
    assert slackbot.posted >= 3 and all(r.headers["Authorization"] == f"Bearer {SLACK_BOT_TOKEN}"
                                        for r in slackbot.requests)
    assert f'"channel":"{SLACK_BOT_CHANNEL}","ts":"1764927000.' in histories[ids[1]]
    refusal = next(r for r in receiver.requests if r.path == response_path)
    assert b"not in the identities file" in refusal.body
    assert "deliver_notification" in histories[ids[1]] and "Slack callback refused" in texts["api log"]
    # botocore logged the headers that carry them (masked): the search is not vacuous for the logs either
    assert "X-Amz-Security-Token" in texts["worker log"] and "Credential=AKIA***" in texts["worker log"]
    assert ids[1] in texts["CLI output"] and recs[0]["id"] in texts["read model"]
    leaks = [f"{what} in {where}" for where, text in texts.items() for what, secret in secrets.items()
             if secret in text]
    leaks += [f"the rejected bearer token in {where}" for where, text in texts.items() if wrong_token in text]
    assert not leaks, leaks
