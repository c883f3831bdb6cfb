"""The long-running entry points as a user runs them: `reclaim demo --exit`, `reclaim dev` + Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from starter.devserver import free_port, port_open

RECLAIM = str(Path(sys.executable).parent / "reclaim")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECLAIM_", "TEMPORAL_", "AWS_ENDPOINT"))}
    env["RECLAIM_HOME"] = str(tmp_path / ".reclaim")
    env.pop("DATABASE_URL", None)
    return env


#: The demo's scenes that wait for a person: each one's approval request must reach its webhook receiver.
ASKING = {"rightsize", "delete-orphan", "delete-kept", "rightsize-flaky", "logs-retention"}


def test_demo_exits_zero_with_its_summary_every_time_it_is_run(tmp_path: Path) -> None:
    """Twice in the same home: its store (and the cooldown it records) outlives a run. Each run's
    approval requests reach its local webhook receiver, signed, and it says where to look."""
    for _ in range(2):
        result = subprocess.run(
            [RECLAIM, "demo", "--exit", "--ui-port", str(free_port())],
            cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        received = [json.loads(line) for line in
                    (tmp_path / ".reclaim" / "demo" / "webhook.jsonl").read_text().splitlines()]
        asked = {d["subject_id"] for d in received if d["verified"] and d["event"] == "approval_requested"}
        runs = {i.split("-")[2] for i in asked}
        assert len(runs) == 1, asked  # this run's, the file starts afresh
        assert {i.split("-", 3)[3] for i in asked} == ASKING, asked
        assert "approval requests of 5/5 approval-needing scenes" in result.stdout
        assert "curl http://127.0.0.1:" in result.stdout and ".reclaim/demo/webhook.jsonl" in result.stdout
    out = result.stdout
    assert "all outcomes as expected" in out
    for status in ("COMPLETED", "REJECTED", "REJECTED_BY_VALIDATION", "ROLLED_BACK", "PLANNED"):
        assert status in out
    assert "Web UI" in out and "Traceback" not in result.stderr
    assert "REST API" in out and "approver" in out  # the demo tokens are printed


def test_two_demos_started_at_once_both_pass(tmp_path: Path) -> None:
    """Engineers share a machine: two demos started together must not fight over the API's port
    (both saw 8000 free; the second met EADDRINUSE binding it, printed a traceback and exited 1 or
    hung without ever ending)."""
    homes = [tmp_path / "one", tmp_path / "two"]
    runs = []
    for home in homes:
        home.mkdir()
        runs.append(subprocess.Popen(
            [RECLAIM, "demo", "--exit", "--ui-port", str(free_port())], cwd=home, env=_env(home),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True))  # its own process group: a hung demo goes with its dev server
    apis = set()
    try:
        for run in runs:
            out, err = run.communicate(timeout=300)  # the losing demo hung after the traceback
            assert run.returncode == 0, out + err
            assert "all outcomes as expected" in out and "Traceback" not in err, out + err
            apis |= {line.split()[2] for line in out.splitlines() if line.startswith("REST API:")}
    finally:
        for run in runs:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    assert len(apis) == 2, apis  # each demo printed its own API


def test_dev_runs_in_the_foreground_and_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port, ui_port, api_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [RECLAIM, "dev", "--port", str(port), "--ui-port", str(ui_port), "--api-port", str(api_port),
         "--metrics-port", str(metrics_port)],
        cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        ports = {"temporal": port, "ui": ui_port, "api": api_port, "metrics": metrics_port}
        while not all(port_open("127.0.0.1", p) for p in ports.values()):
            assert proc.poll() is None, proc.communicate()
            if time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                log = tmp_path / ".reclaim" / "temporal.log"
                raise AssertionError(f"dev server did not come up: open {({k: port_open('127.0.0.1', p) for k, p in ports.items()})}\n"
                                     f"{out}\n{err}\n{log.read_text()[-2000:] if log.exists() else ''}")
            time.sleep(0.2)
        health = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=10)
        assert json.load(health)["checks"] == {"temporal": "ok", "database": "ok"}
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as metrics:
            assert "# TYPE reclaim_notifications_sent_total counter" in metrics.read().decode()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr
    assert f"worker metrics (notification deliveries) at http://127.0.0.1:{metrics_port}/metrics" in stdout
    assert not port_open("127.0.0.1", metrics_port)
    assert (tmp_path / ".reclaim" / "temporal.db").exists()  # persistent history
    assert not port_open("127.0.0.1", port)  # the dev server went down with it


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_api_and_worker_started_before_temporal_wait_for_it_without_a_traceback(tmp_path: Path) -> None:
    """As in a compose stack where Temporal comes up last: both start, say so in one line, then connect."""
    from starter.devserver import dev_server

    temporal_port, api_port = free_port(), free_port()
    env = _env(tmp_path) | {"TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}"}
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with api_log.open("w") as api_err, worker_log.open("w") as worker_err:
        api = subprocess.Popen([RECLAIM, "api", "--port", str(api_port)], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=api_err)
        worker = subprocess.Popen([RECLAIM, "worker"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=worker_err)
    try:
        deadline = time.monotonic() + 90
        while not port_open("127.0.0.1", api_port) or "not reachable" not in worker_log.read_text():
            assert api.poll() is None and worker.poll() is None, api_log.read_text() + worker_log.read_text()
            assert time.monotonic() < deadline, "the API or the worker did not start without Temporal"
            time.sleep(0.2)
        status, health = _get(f"http://127.0.0.1:{api_port}/healthz")
        assert status == 503
        assert str(health["checks"]["temporal"]).startswith("unreachable")  # type: ignore[index]
        assert _get(f"http://127.0.0.1:{api_port}/openapi.json")[0] == 200
        with dev_server(tmp_path / "late", port=temporal_port, ui_port=None, persistent=False):
            deadline = time.monotonic() + 120  # the worker's retries back off to 30 s at the most
            while (_get(f"http://127.0.0.1:{api_port}/healthz")[0] != 200
                   or "worker polling task queue" not in worker_log.read_text()):
                assert api.poll() is None and worker.poll() is None
                assert time.monotonic() < deadline, "API or worker never connected once Temporal answered"
                time.sleep(0.5)
            for proc in (api, worker):
                proc.send_signal(signal.SIGINT)
            for proc in (api, worker):
                proc.wait(timeout=60)
    finally:
        for proc in (api, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    api_text, worker_text = api_log.read_text(), worker_log.read_text()
    assert api.returncode == 0 and worker.returncode == 0, api_text + worker_text
    assert "Traceback" not in api_text and "Traceback" not in worker_text
    assert "Application startup failed" not in api_text
    assert f"Temporal at 127.0.0.1:{temporal_port} is not reachable" in worker_text
