"""Recorded histories replay against today's workflow code: determinism is checked in every run.

A change that alters the command order of ExecutionWorkflow or PlanWorkflow
must be guarded with `workflow.patched`, or this fails.
"""

from __future__ import annotations

import base64
import json
import re
from itertools import pairwise
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS, workflow_runner
from workflows import versions

ROOT = Path(__file__).parent / "histories"
HISTORIES = sorted(ROOT.glob("*/*.json"))
#: Folders recorded by generation-2026-12-02 or later (one patch asked in the first activation),
#: and the generation each folder's executions belong to.
DECIDED_AT_START = {"v4": versions.DECIDED_AT_START, "v5": versions.DECIDED_AT_START, "v6": versions.NOTIFYING,
                    "v8": versions.TELLING_AHEAD, "v9": versions.TIMING_LAUNCHES}


def _name(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").as_posix()


def test_every_path_is_recorded() -> None:
    names = {_name(p) for p in HISTORIES}
    paths = {"stop_completed_window_closed", "capacity_failure_compensated", "gp3_rolled_back_on_request",
             "cancelled_awaiting_approval", "approval_expired", "dry_run_planned"}
    plans = {"plan_dry_run_approved_drift_refused", "plan_item_approved_by_plan", "plan_continued_as_new_first_run",
             "plan_threshold_paused_aborted"}
    assert {f"v1/{p}" for p in paths | plans} <= names
    assert {f"v4/{p}" for p in paths | plans | {"scheduled_window_then_completed"}} <= names
    assert {f"v5/{p}" for p in plans} <= names
    assert {f"v6/{p}" for p in paths | plans} <= names
    assert {"v7/plan_manual_confirmed_failed_timed_out", "v7/plan_manual_dry_run_confirmed"} <= names
    assert {f"v8/{p}" for p in paths | {"approval_reminded_then_approved", "delete_owner_warned_before_window",
                                         "undo_failed_alarm_acknowledged", "alarm_acknowledged",
                                         "hub_risk_needs_a_human_expired",
                                         "rightsize_watched_then_window_closed"}} <= names
    assert {f"v9/{p}" for p in paths | {"approval_reminded_then_approved", "undo_failed_alarm_acknowledged",
                                         "drill_launch_waited_then_cleaned_up"}} <= names
    assert {"v9/plan_told_dry_run_approved_finished", "v9/plan_told_threshold_paused_resumed_finished",
            "v9/plan_held_account_then_released"} <= names
    assert "v3/demo_rightsize_flaky_nondeterministic" in names


@pytest.mark.parametrize("path", HISTORIES, ids=[_name(p) for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(_workflow_id(path), path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def _decoded(path: Path) -> str:
    """The history's JSON with every payload's data decoded (they are base64 in the file)."""
    found: list[str] = [path.read_text()]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str):
                found.append(base64.b64decode(data).decode("utf-8", "replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(found[0]))
    return "\n".join(found)


def _workflow_id(path: Path) -> str:
    """The id the history was recorded under, where the workflow derives a command from it (a
    failed undo's alarm is `alarm-<execution id>`, a savings check `savings-<execution id>`); the
    file's name otherwise (a history's JSON
    does not carry its own workflow's id)."""
    for event in json.loads(path.read_text())["events"]:
        child = event.get("startChildWorkflowExecutionInitiatedEventAttributes")
        for prefix in ("alarm-", "savings-"):
            if child and child["workflowId"].startswith(prefix):
                return str(child["workflowId"]).removeprefix(prefix)
    return _name(path)


def _patch_markers(path: Path) -> list[tuple[int, str]]:
    """(workflow task number, patch id) of every patch marker in a recorded history."""
    found, task = [], 0
    for event in json.loads(path.read_text())["events"]:
        if event["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED":
            task += 1
        attributes = event.get("markerRecordedEventAttributes")
        if attributes and attributes["markerName"] == "core_patch":
            payload = attributes["details"]["patch-data"]["payloads"][0]["data"]
            found.append((task, json.loads(base64.b64decode(payload))["id"]))
    return found


def test_every_patch_id_has_a_recorded_history_with_its_marker() -> None:
    """A patched branch no history replays is untested: each id is in one (and they all replay)."""
    recorded = {patch_id for path in HISTORIES for _, patch_id in _patch_markers(path)}
    assert set(versions.ALL) <= recorded, f"no recorded history has: {set(versions.ALL) - recorded}"


def test_workflows_ask_patches_only_by_their_named_ids() -> None:
    sources = "\n".join(p.read_text() for p in (Path(__file__).parent.parent / "workflows").glob("*.py"))
    asked = re.findall(r"patched\(\s*([^,)]+)", sources)
    assert asked, "no patch call found: has the API changed?"
    literal = [a for a in asked if a.strip().startswith(("'", '"'))]
    assert not literal, f"patch ids as string literals (name them in workflows/versions.py): {literal}"


def test_the_current_generation_decides_its_patch_in_its_first_workflow_task() -> None:
    """No local activity comes before the first task's commands: no timing can move a marker."""
    current = [p for p in HISTORIES if p.parent.name in DECIDED_AT_START and _workflow_type(p) == "ExecutionWorkflow"]
    assert {p.parent.name for p in current} >= {"v4", "v6"}, "no history of the current generations is recorded"
    assert versions.GENERATIONS[0] == DECIDED_AT_START[max(DECIDED_AT_START)], "record the newest generation"
    for path in current:
        markers = _patch_markers(path)
        # One marker: the generation's; the earlier patches' branches are taken without asking.
        assert markers == [(1, DECIDED_AT_START[path.parent.name])], f"{_name(path)}: {markers}"


def test_the_newest_generation_tells_people() -> None:
    """Recorded with a notify file routing everything to a webhook: deliveries are in the history."""
    told = [p for p in HISTORIES if p.parent.name == "v6" and '"deliver_notification"' in p.read_text()]
    assert {_name(p) for p in told} >= {"v6/stop_completed_window_closed", "v6/rightsize_approved_by_update",
                                        "v6/capacity_failure_compensated", "v6/approval_expired"}


def test_the_generation_that_tells_ahead_is_recorded_telling_ahead() -> None:
    """v8: a reminder and an owner warning delivered, a failed undo's alarm started and
    acknowledged, the hub's risk input in the score."""
    def text(name: str) -> str:
        return _decoded(ROOT / "v8" / f"{name}.json")

    assert "approval_reminder" in text("approval_reminded_then_approved")
    assert "owner_warning" in text("delete_owner_warned_before_window")
    assert "startChildWorkflowExecutionInitiatedEventAttributes" in text("undo_failed_alarm_acknowledged")
    assert "RollbackAlarm" in text("undo_failed_alarm_acknowledged")
    assert _workflow_type(ROOT / "v8" / "alarm_acknowledged.json") == "RollbackAlarm"
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED" in text("alarm_acknowledged")
    assert "cannot be rolled back" in text("hub_risk_needs_a_human_expired")
    assert "ask_window" in text("stop_completed_window_closed")  # every change asks for its window
    assert "SavingsCheck" in text("stop_completed_window_closed")  # a change that stood is measured later
    watched = text("rightsize_watched_then_window_closed")
    assert "read_metrics" in watched and watched.count('"check_metrics"') >= 6


def test_the_generation_that_times_launches_waits_on_durable_timers() -> None:
    """v9: a drill's apply hands its "not yet" back and is asked again after a timer; what it
    launched, and when, reaches the execution's view (the plan report's per-server time)."""
    path = ROOT / "v9" / "drill_launch_waited_then_cleaned_up.json"
    events = json.loads(path.read_text())["events"]
    kinds = [e["eventType"].removeprefix("EVENT_TYPE_") for e in events]
    applies = [i for i, e in enumerate(events) if e.get("activityTaskScheduledEventAttributes", {})
               .get("activityType", {}).get("name") == "apply"]
    assert len(applies) >= 2 and all("TIMER_FIRED" in kinds[a:b] for a, b in pairwise(applies))
    text = _decoded(path)
    assert '"in_progress":true' in text and '"hand_back":true' in text
    assert re.search(r'"launches":\{"s-0+1":"[^"]+","s-0+2":"[^"]+"\}', text), "no per-server launch in the view"


def test_the_scheduled_path_is_recorded() -> None:
    scheduled = [p for p in HISTORIES if '"SCHEDULED"' in _search_attribute_values(p, "ReclaimStatus")]
    assert scheduled, "no recorded history waits for a maintenance window"


def _search_attribute_values(path: Path, name: str) -> str:
    values = []
    for event in json.loads(path.read_text())["events"]:
        upsert = event.get("upsertWorkflowSearchAttributesEventAttributes")
        if upsert and name in upsert["searchAttributes"]["indexedFields"]:
            values.append(base64.b64decode(upsert["searchAttributes"]["indexedFields"][name]["data"]).decode())
    return " ".join(values)


def _workflow_type(path: Path) -> str:
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    return str(started["workflowType"]["name"])


def test_manual_items_ask_their_patch_where_the_first_one_is_met() -> None:
    """A plan runs no local activity: the marker comes with the first manual item's commands, and
    the answers (a refused signal, a confirm by update, a fail by signal) and the timeout are recorded."""
    path = ROOT / "v7" / "plan_manual_confirmed_failed_timed_out.json"
    assert [p for _, p in _patch_markers(path)] == [versions.PLAN_MANUAL_STEPS]
    events = json.loads(path.read_text())["events"]
    signals = [e["workflowExecutionSignaledEventAttributes"]["signalName"] for e in events
               if "workflowExecutionSignaledEventAttributes" in e]
    assert signals.count("confirm") == 1 and signals.count("fail") == 1
    assert any(e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED" for e in events)
    assert any(e["eventType"] == "EVENT_TYPE_TIMER_FIRED" for e in events)


def _activities(path: Path) -> list[str]:
    return [e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in json.loads(path.read_text())["events"] if "activityTaskScheduledEventAttributes" in e]


def test_plans_that_tell_and_hold_decide_their_patch_in_their_first_workflow_task() -> None:
    """v9 plans: the patch's marker in the first task; their notifications routed and delivered by
    ordinary activities (a plan records no local-activity marker); held items checked in batches."""
    for path in sorted((ROOT / "v9").glob("plan_*.json")):
        markers = _patch_markers(path)
        assert markers[0] == (1, versions.PLAN_TELLS_AND_HOLDS), f"{_name(path)}: {markers}"
        assert all(p != versions.PLAN_TELLS_AND_HOLDS for _, p in markers[1:])
        text = path.read_text()
        assert '"core_local_activity"' not in text, _name(path)
    told = _activities(ROOT / "v9" / "plan_told_dry_run_approved_finished.json")
    assert told.count("route_notification") == 2 and told.count("deliver_notification") == 2
    paused = _decoded(ROOT / "v9" / "plan_told_threshold_paused_resumed_finished.json")
    assert "plan_paused" in paused and "plan_finished" in paused
    held = ROOT / "v9" / "plan_held_account_then_released.json"
    assert _activities(held).count("check_plan_accounts") >= 4
    assert "is disabled in the accounts file" in _decoded(held)
