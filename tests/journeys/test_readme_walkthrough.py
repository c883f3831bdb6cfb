"""The README's walkthrough, line by line as written, against `reclaim demo --keep-up`.

Each command line of the block after `<!-- walkthrough -->` runs in a shell that has
sourced the demo's env.sh, from the directory the README assumes (the one holding
`.venv` and `.reclaim`); a trailing `# exit N` is the exit code the line must have,
otherwise 0. A README line that stops working fails this test.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from starter.devserver import free_port
from tests.journeys.test_entrypoints import RECLAIM, _env

README = Path(__file__).parents[2] / "README.md"
REPO_VENV = Path(RECLAIM).parent.parent


def walkthrough() -> list[tuple[str, int]]:
    text = README.read_text()
    block = text.split("<!-- walkthrough -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        if not line.strip():
            continue
        expected = re.search(r"#\s*exit (\d+)", line)
        lines.append((line, int(expected.group(1)) if expected else 0))
    return lines


def test_every_line_of_the_readme_walkthrough_works_as_written(tmp_path: Path) -> None:
    lines = walkthrough()
    assert lines[0][0].startswith("source .reclaim/demo/walkthrough/env.sh")
    (tmp_path / ".venv").symlink_to(REPO_VENV)
    env = _env(tmp_path)
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen([".venv/bin/reclaim", "demo", "--keep-up", "--ui-port", str(free_port())],
                                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    env_sh = tmp_path / ".reclaim" / "demo" / "walkthrough" / "env.sh"
    try:
        deadline = time.monotonic() + 240
        while not env_sh.exists() or "stays up" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the demo never came up for the walkthrough"
            time.sleep(0.5)
        source = lines[0][0].split("#")[0].strip()
        for line, expected in lines[1:]:
            result = subprocess.run(["bash", "-c", f"{source} && {line}"], cwd=tmp_path, env=env,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
            said = f"{line}\n-> {result.returncode}\n{result.stdout}\n{result.stderr}"
            assert result.returncode == expected, said
            assert "Traceback" not in result.stdout + result.stderr, said
        # What the lines did: the rightsize was rolled back, the deletion rejected, the stop cancelled.
        expected = {"rightsize": "ROLLED_BACK", "delete": "REJECTED", "stop": "CANCELLED"}
        deadline = time.monotonic() + 120
        while True:
            seen = {}
            for name in expected:
                status = subprocess.run(
                    ["bash", "-c", f"{source} && .venv/bin/reclaim status exec-$WALK-{name} --json"],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
                assert status.returncode == 0, f"status of {name} -> {status.returncode}\n{status.stdout}\n{status.stderr}"
                seen[name] = json.loads(status.stdout)["status"]
            if seen == expected:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, log.read_text()
    assert "all outcomes as expected" in log.read_text()
