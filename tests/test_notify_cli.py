"""`reclaim notify check` and `reclaim notify test CHANNEL`: one-line errors, no traceback, no secret printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activities.notify.signature import HEADER, verify_signature
from starter.cli import app
from tests.notify_support import HttpReceiver, http_receiver

SECRET = "cli-hook-secret-31"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, HttpReceiver]]:
    with http_receiver() as receiver:
        path = tmp_path / "notify.yaml"
        path.write_text(f"""\
channels:
  hook: {{type: webhook, url: "{receiver.url}/hook", secret: env:T_CLI_HOOK}}
  slack: {{type: slack, webhook_url: env:T_CLI_SLACK}}
rules:
  - channels: [hook]
    events: [rollback_failed]
    quiet_hours: {{start: 22:00, end: 07:00, timezone: Europe/Paris}}
  - channels: [slack]
""")
        monkeypatch.setenv("T_CLI_HOOK", SECRET)
        monkeypatch.setenv("T_CLI_SLACK", f"{receiver.url}/services/SLACKCLISECRET")
        monkeypatch.setenv("RECLAIM_NOTIFY_FILE", str(path))
        yield path, receiver


def reclaim(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_prints_channels_and_rules(setup: tuple[Path, HttpReceiver]) -> None:
    code, stdout, stderr = reclaim("notify", "check")
    assert code == 0, stderr
    flat = " ".join(stdout.split())
    assert "hook" in flat and "webhook" in flat and "env:T_CLI_HOOK (resolves)" in flat
    assert "events=rollback_failed quiet 22:00-07:00 Europe/Paris" in flat and "everything" in flat
    assert SECRET not in stdout + stderr and "SLACKCLISECRET" not in stdout + stderr


def test_check_refuses_a_bad_file_in_one_line(setup: tuple[Path, HttpReceiver], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  s:\n    type: slack\n    webhook_url: https://hooks.slack.com/services/T/B/inline\n")
    code, stdout, stderr = reclaim("notify", "check", "--file", str(bad))
    assert code == 1 and stdout == ""
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith(f"error: {bad}:4: channels.s.webhook_url: looks like a secret")
    assert "inline" not in stderr.split("looks like")[0]
    code, _, stderr = reclaim("notify", "check", "--file", str(tmp_path / "absent.yaml"))
    assert code == 1 and "cannot read it" in stderr and "Traceback" not in stderr


def test_check_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECLAIM_NOTIFY_FILE", raising=False)
    code, _, stderr = reclaim("notify", "check")
    assert code == 1 and stderr == "error: no notify file: set RECLAIM_NOTIFY_FILE or pass --file\n"


def test_test_sends_one_signed_message(setup: tuple[Path, HttpReceiver]) -> None:
    import time

    _, receiver = setup
    code, stdout, stderr = reclaim("notify", "test", "hook")
    assert code == 0, stderr
    assert stdout.startswith("sent to hook (webhook): HTTP 200")
    [got] = receiver.requests
    assert verify_signature(SECRET, got.headers[HEADER], got.body, now=time.time())
    assert json.loads(got.body)["notification"]["reason"].startswith("A test message")


def test_test_reports_a_refusal_in_one_line(setup: tuple[Path, HttpReceiver]) -> None:
    _, receiver = setup
    receiver.status = 403
    code, _, stderr = reclaim("notify", "test", "slack")
    assert code == 1 and "Traceback" not in stderr
    assert stderr == "error: channel slack: 127.0.0.1 answered HTTP 403 (refused in a workflow)\n"
    code, _, stderr = reclaim("notify", "test", "pager")
    assert code == 1 and stderr == "error: no channel 'pager' in " + str(setup[0]) + "; channels: hook, slack\n"


def test_a_worker_with_a_malformed_notify_file_stops_at_once_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before it even looks for Temporal (which is nowhere here): one line, exit 1, no traceback."""
    bad = tmp_path / "notify.yaml"
    bad.write_text("channels:\n  hook:\n    type: webhook\n    url: ftp://nowhere\n    secret: env:X\n")
    monkeypatch.setenv("RECLAIM_NOTIFY_FILE", str(bad))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    code, _, stderr = reclaim("worker")
    assert code == 1, stderr
    assert stderr.startswith(f"error: {bad}:4: channels.hook.url") and "Traceback" not in stderr
