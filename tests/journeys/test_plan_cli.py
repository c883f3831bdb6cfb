"""`reclaim plan ...` as real subprocesses against the test's worker (see tests/journeys/test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from domain.execution import execution_id_for
from domain.status import ExecutionStatus as S
from tests.conftest import AwsAccount
from tests.helpers import recommendation
from tests.journeys.test_cli import Cli, cli, failed, succeeded

__all__ = ["cli"]


async def test_plan_yaml_dry_run_approve_watch_and_report(cli: Cli, aws: AwsAccount, tmp_path: Path) -> None:
    instances = [aws.instance("m5.large") for _ in range(3)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"})
            for i in instances]
    plan = {
        "name": "idle dev boxes",
        "recommendations": [r.model_dump(mode="json", exclude_none=True) for r in recs],
        "strategy": "waves",
        "waves": [{"name": "canary", "items": [recs[0].id]},
                  {"name": "rest", "items": [recs[1].id, recs[2].id], "depends_on": ["canary"], "mode": "ordered"}],
        "options": {"rollback_window": "PT0S"},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))

    run = await cli("plan", "run", str(path), "--dry-run", "--wait", "--json", "--id", "idle-dev",
                    "--max-concurrency", "50%", "--error-threshold", "1")
    assert run.returncode == 3, str(run)  # the dry run's report waits for a person
    view = run.json()
    assert view["plan_id"] == "idle-dev" and view["status"] == "AWAITING_APPROVAL", run
    assert view["rate"]["max_concurrency"] == {"value": 50, "percent": True}
    assert all(aws.instance_state(i)[0] == "running" for i in instances)

    assert "cannot approve" in failed(await cli("plan", "approve", "idle-dev"))  # alice asked for it
    assert "role viewer" in failed(await cli("plan", "approve", "idle-dev", "--as", "bob", RECLAIM_ROLE="viewer"))
    succeeded(await cli("plan", "approve", "idle-dev", "--as", "bob", "-m", "looks right"))
    watched = succeeded(await cli("plan", "watch", "idle-dev", "--interval", "0.3", timeout=120))
    assert "COMPLETED" in watched.stdout and "canary" in watched.stdout and "rest" in watched.stdout
    assert all(aws.instance_state(i)[0] == "stopped" for i in instances)

    report = json.loads(succeeded(await cli("plan", "report", "idle-dev", "--format", "json")).stdout)
    assert report["status"] == "COMPLETED" and report["approved_by"] == "bob"
    assert [line["status"] for line in report["items"]] == [S.COMPLETED.value] * 3
    markdown = succeeded(await cli("plan", "report", "idle-dev")).stdout
    assert markdown.startswith("# Plan idle-dev: idle dev boxes") and "| canary |" in markdown.replace("| 1 | canary", "| canary")
    listed = succeeded(await cli("plan", "list", "--json")).json()
    assert "idle-dev" in [p["plan_id"] for p in listed]


async def test_plan_errors_are_one_line_and_change_nothing(cli: Cli, aws: AwsAccount, tmp_path: Path) -> None:
    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("recommendations: [{id: 1\n")
    assert "neither JSON nor YAML" in failed(await cli("plan", "run", str(bad)))
    waves = tmp_path / "waves.json"
    waves.write_text(json.dumps({"recommendations": [rec.model_dump(mode="json", exclude_none=True)],
                                 "strategy": "waves", "waves": [{"name": "a", "items": ["nope"]}]}))
    assert "names recommendation nope, which is not in the plan" in failed(await cli("plan", "run", str(waves)))
    flat = tmp_path / "list.json"
    flat.write_text(json.dumps([rec.model_dump(mode="json", exclude_none=True)]))
    assert "--max-concurrency" in failed(await cli("plan", "run", str(flat), "--max-concurrency", "lots"))
    assert "no plan nope" in failed(await cli("plan", "status", "nope"))
    assert "no running plan nope" in failed(await cli("plan", "pause", "nope"))
    assert "expected md or json" in failed(await cli("plan", "report", "nope", "--format", "pdf"))
    assert aws.instance_state(instance)[0] == "running"


async def test_stock_temporal_cli_queries_and_approves_a_plan(cli: Cli, aws: AwsAccount, tmp_path: Path) -> None:
    """Approvers without Reclaim's CLI: `temporal workflow query|update execute` on `plan:<id>`."""
    import asyncio
    import subprocess

    from starter.devserver import temporal_binary

    instance = aws.instance("m5.large")
    rec = recommendation("ec2.stop", instance, {"expected_instance_type": "m5.large"})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps([rec.model_dump(mode="json", exclude_none=True)]))
    started = await cli("plan", "run", str(path), "--dry-run", "--wait", "--json")
    assert started.returncode == 3, str(started)
    plan_id = started.json()["plan_id"]
    address = cli.env["TEMPORAL_ADDRESS"]

    def temporal(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([temporal_binary(), "workflow", *args, "--address", address,
                               "--workflow-id", f"plan:{plan_id}"], capture_output=True, text=True, timeout=60)

    progress = await asyncio.to_thread(temporal, "query", "--name", "progress", "--output", "json")
    assert progress.returncode == 0 and "AWAITING_APPROVAL" in progress.stdout, progress.stderr
    own = await asyncio.to_thread(temporal, "update", "execute", "--name", "approve",
                                  "--input", '{"actor": "alice", "role": "approver"}')
    assert own.returncode != 0 and "cannot approve" in own.stderr + own.stdout
    ok = await asyncio.to_thread(temporal, "update", "execute", "--name", "approve",
                                 "--input", '{"actor": "bob", "role": "approver", "comment": "via temporal"}')
    assert ok.returncode == 0, ok.stderr
    succeeded(await cli("plan", "watch", plan_id, "--interval", "0.3", timeout=120))
    assert aws.instance_state(instance)[0] == "stopped"


async def test_plan_wait_and_watch_stop_when_only_people_can_move_the_plan(
    cli: Cli, aws: AwsAccount, tmp_path: Path
) -> None:
    """Every started item awaits an approval: --wait and watch stop with 3 and say why; the id comes first."""
    instances = [aws.instance("m5.large") for _ in range(2)]
    recs = [recommendation("ec2.stop", i, {"expected_instance_type": "m5.large"}) for i in instances]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"recommendations": [r.model_dump(mode="json", exclude_none=True) for r in recs],
                                "strategy": "parallel", "options": {"auto_approve": False}}))
    run = await cli("plan", "run", str(path), "--wait", "--id", "needs-bob", timeout=120)
    assert run.returncode == 3, str(run)
    assert run.stdout.splitlines()[0].startswith("plan needs-bob: RUNNING, 2 items")
    assert "needs a person: 2 items await approval" in run.stderr
    shown = succeeded(await cli("plan", "status", "needs-bob"))
    flat = " ".join(shown.stdout.split())  # Rich wraps the title at the terminal's width
    assert "AWAITING_APPROVAL 2" in flat and "2 running (2 awaiting approval)" in flat
    watched = await cli("plan", "watch", "needs-bob", "--interval", "0.3", timeout=120)
    assert watched.returncode == 3, str(watched)
    assert all(aws.instance_state(i)[0] == "running" for i in instances)
    for rec in recs:
        succeeded(await cli("approve", execution_id_for(rec.id), "--as", "bob"))
    done = await cli("plan", "watch", "needs-bob", "--interval", "0.3", timeout=120)
    assert done.returncode == 0, str(done)
    assert all(aws.instance_state(i)[0] == "stopped" for i in instances)
