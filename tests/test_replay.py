"""Recorded histories replay against today's workflow code: determinism is checked in every run.

A change that alters the command order of ExecutionWorkflow or PlanWorkflow
must be guarded with `workflow.patched`, or this fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS, workflow_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_path_is_recorded() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"stop_completed_window_closed", "capacity_failure_compensated", "gp3_rolled_back_on_request",
            "cancelled_awaiting_approval", "approval_expired", "dry_run_planned",
            "plan_dry_run_approved_drift_refused", "plan_item_approved_by_plan", "plan_continued_as_new_first_run",
            "plan_threshold_paused_aborted"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
