"""The demo's webhook receiver: the real webhook channel delivers to it through the demo's own notify
file; it counts only what its key verifies, lists it over HTTP and in its JSONL file; and the demo's
final check fails when an approval-needing scene's request never arrived."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from temporalio.testing import ActivityEnvironment

from activities.notify.delivery import NotifyActivities
from activities.notify.signature import HEADER, sign
from activities.notify.webhook import body, encode
from domain.execution import ExecutionView
from domain.notifications import DeliveryInput, DeliveryStatus
from domain.status import ExecutionStatus as S
from starter.demo import Scene, told
from starter.demo_receiver import CHANNEL, SECRET_ENV, demo_receiver, notify_file
from tests.helpers import recommendation
from tests.notify_support import approval_request


def _post(url: str, data: bytes, signature: str) -> int:
    request = urllib.request.Request(url, data=data, headers={HEADER: signature, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


async def test_the_demo_notify_file_delivers_signed_requests_and_forgeries_do_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "demo-key-for-this-test")
    with demo_receiver("demo-key-for-this-test", tmp_path / "webhook.jsonl") as receiver:
        acts = NotifyActivities.from_path(notify_file(tmp_path, receiver))
        asked = approval_request(subject_id="exec-demo-1-rightsize")
        sent = await ActivityEnvironment().run(acts.deliver, DeliveryInput(notification=asked, channel=CHANNEL))
        assert sent.status is DeliveryStatus.SENT
        assert "demo-key-for-this-test" not in (tmp_path / "notify.yaml").read_text()

        forged = encode(body(approval_request(subject_id="exec-demo-1-forged")))
        assert _post(receiver.hook_url, forged, sign("another-key", forged, int(time.time()))) == 401
        stale = encode(body(approval_request(subject_id="exec-demo-1-stale")))
        assert _post(receiver.hook_url, stale, sign("demo-key-for-this-test", stale, int(time.time()) - 600)) == 401

        assert receiver.told("approval_requested") == {"exec-demo-1-rightsize"}
        assert await receiver.missing("approval_requested", ["exec-demo-1-rightsize"], timeout=5) == set()
        with urllib.request.urlopen(f"{receiver.url}/", timeout=10) as answer:
            listed = json.load(answer)["received"]
    assert [(d["verified"], d["event"], d["subject_id"]) for d in listed] == [
        (True, "approval_requested", "exec-demo-1-rightsize"), (False, None, None), (False, None, None)]
    lines = [json.loads(line) for line in (tmp_path / "webhook.jsonl").read_text().splitlines()]
    assert lines == listed
    assert lines[0]["dedup_key"] == "exec-demo-1-rightsize:approval_requested:0"


def _view(execution_id: str) -> ExecutionView:
    now = datetime.now(UTC)
    return ExecutionView(execution_id=execution_id, recommendation_id="r", customer_id="acme",
                         account_id="123456789012", region="us-east-1", kind="ec2.rightsize",
                         resource_id="i-1", status=S.COMPLETED, requested_by="alice", step="done",
                         progress_percent=100, started_at=now, updated_at=now)


async def test_the_demo_fails_when_an_approval_request_never_arrived(tmp_path: Path) -> None:
    story = [Scene("asks", recommendation("ec2.rightsize", "i-1"), S.COMPLETED, asks=True),
             Scene("auto", recommendation("ec2.stop", "i-2"), S.COMPLETED)]
    views = [_view("exec-demo-asks"), _view("exec-demo-auto")]
    out = io.StringIO()
    with demo_receiver("k", tmp_path / "webhook.jsonl") as receiver:
        assert not await told(Console(file=out, width=200), receiver, story, views, None, timeout=0.5)
        told_body = encode(body(approval_request(subject_id="exec-demo-asks")))
        assert _post(receiver.hook_url, told_body, sign("k", told_body, int(time.time()))) == 200
        # Only the scene that waits for a person must have been told of.
        assert await told(Console(file=out, width=200), receiver, story, views, "http://127.0.0.1:1/metrics")
    printed = out.getvalue()
    assert "no approval request reached the receiver for exec-demo-asks" in printed
    assert "approval requests of 1/1 approval-needing scenes" in printed
    assert f"curl {receiver.url}/" in printed and str(tmp_path / "webhook.jsonl") in printed
