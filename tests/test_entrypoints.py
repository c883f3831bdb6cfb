"""The long-running entry points as a user runs them: `reclaim demo --exit`, `reclaim dev` + Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from starter.devserver import free_port, port_open

RECLAIM = str(Path(sys.executable).parent / "reclaim")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECLAIM_", "TEMPORAL_", "AWS_ENDPOINT"))}
    env["RECLAIM_HOME"] = str(tmp_path / ".reclaim")
    env.pop("DATABASE_URL", None)
    return env


def test_demo_exits_zero_with_its_summary(tmp_path: Path) -> None:
    result = subprocess.run(
        [RECLAIM, "demo", "--exit", "--ui-port", str(free_port())],
        cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "all outcomes as expected" in out
    for status in ("COMPLETED", "REJECTED", "REJECTED_BY_VALIDATION", "ROLLED_BACK", "PLANNED"):
        assert status in out
    assert "Web UI" in out and "Traceback" not in result.stderr
    assert "REST API" in out and "approver" in out  # the demo tokens are printed


def test_dev_runs_in_the_foreground_and_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port, ui_port, api_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [RECLAIM, "dev", "--port", str(port), "--ui-port", str(ui_port), "--api-port", str(api_port)],
        cwd=tmp_path, env=_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not all(port_open("127.0.0.1", p) for p in (port, ui_port, api_port)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "dev server did not come up"
            time.sleep(0.2)
        health = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=10)
        assert json.load(health)["checks"] == {"temporal": "ok", "database": "ok"}
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr
    assert (tmp_path / ".reclaim" / "temporal.db").exists()  # persistent history
    assert not port_open("127.0.0.1", port)  # the dev server went down with it
