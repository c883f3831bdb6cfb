"""The recovery-time figure of a plan of drills: how long each server and each wave took to launch.

A drill's apply step ends when DRS has launched every recovery instance of the item, so the time
from the execution entering APPLYING to entering VERIFYING (both in its log, on the workflow's
clock) is the item's time to launch: per server when the item names one server (the recommended
shape), the slowest of its servers otherwise. A wave's figure runs from its first launch request to
its last launched server. Pure: the store supplies the two instants, the report renders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import Field

from domain.base import StrictModel
from domain.status import ExecutionStatus

#: Kinds whose apply ends when what they launch is up: their apply time is a time to launch.
LAUNCH_TIMED_KINDS = frozenset({"drs.drill"})


class _Item(Protocol):
    wave: int
    recommendation: Any
    status: str
    launch_started_at: datetime | None
    launched_at: datetime | None


def launch_window(log: Sequence[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    """When the execution entered APPLYING and then VERIFYING (its view's `log`, as stored), or None
    when it never got past applying."""
    started = launched = None
    for entry in log:
        status, at = entry.get("status"), entry.get("at")
        if status == ExecutionStatus.APPLYING.value and started is None and at:
            started = datetime.fromisoformat(str(at))
        elif status == ExecutionStatus.VERIFYING.value and started is not None and at:
            launched = datetime.fromisoformat(str(at))
            break
    return (started, launched) if started and launched else None


class ServerLaunch(StrictModel):
    recommendation_id: str
    wave: str
    servers: list[str] = Field(description="The item's DRS source servers.")
    status: str
    time_to_launch_seconds: float | None = Field(default=None, description="None when it never launched.")


class WaveLaunch(StrictModel):
    wave: str
    items: int
    launched: int
    time_to_launch_seconds: float | None = Field(
        default=None, description="From the wave's first launch request to its last launched server.")
    slowest_item_seconds: float | None = None


class RecoveryTime(StrictModel):
    servers: list[ServerLaunch]
    waves: list[WaveLaunch]
    total_seconds: float | None = Field(default=None, description="First launch request to last launch, all waves.")


def recovery_time(items: Sequence[_Item], wave_names: dict[int, str]) -> RecoveryTime | None:
    """The figure for the plan's drill items; None when the plan has none."""
    drills = [i for i in items if i.recommendation is not None and i.recommendation.kind in LAUNCH_TIMED_KINDS]
    if not drills:
        return None
    servers, waves = [], []
    for index in sorted({i.wave for i in drills}):
        in_wave = [i for i in drills if i.wave == index]
        timed = [i for i in in_wave if i.launch_started_at and i.launched_at]
        seconds = [_seconds(i.launch_started_at, i.launched_at) for i in timed]
        name = wave_names.get(index, str(index))
        waves.append(WaveLaunch(
            wave=name, items=len(in_wave), launched=len(timed), slowest_item_seconds=max(seconds, default=None),
            time_to_launch_seconds=_seconds(min(i.launch_started_at for i in timed),  # type: ignore[type-var]
                                            max(i.launched_at for i in timed)) if timed else None))  # type: ignore[type-var]
        for item in in_wave:
            rec = item.recommendation
            took = _seconds(item.launch_started_at, item.launched_at) if item in timed else None
            servers.append(ServerLaunch(recommendation_id=rec.id, wave=name, status=item.status,
                                        servers=list(rec.params.get("source_server_ids") or [rec.resource_id]),
                                        time_to_launch_seconds=took))
    timed = [i for i in drills if i.launch_started_at and i.launched_at]
    total = _seconds(min(i.launch_started_at for i in timed),  # type: ignore[type-var]
                     max(i.launched_at for i in timed)) if timed else None  # type: ignore[type-var]
    return RecoveryTime(servers=servers, waves=waves, total_seconds=total)


def _seconds(start: datetime | None, end: datetime | None) -> float:
    assert start is not None and end is not None
    return round((end - start).total_seconds(), 1)


def recovery_markdown(recovery: RecoveryTime | None) -> list[str]:
    if recovery is None:
        return []

    def shown(seconds: float | None) -> str:
        return "" if seconds is None else f"{seconds:g} s"

    out = ["", "## Recovery time (drills)", "",
           f"All waves: {shown(recovery.total_seconds) or 'nothing launched'}", "",
           "| wave | items | launched | time to launch | slowest item |", "|---|---|---|---|---|"]
    out += [f"| {w.wave} | {w.items} | {w.launched} | {shown(w.time_to_launch_seconds)} "
            f"| {shown(w.slowest_item_seconds)} |" for w in recovery.waves]
    out += ["", "| item | wave | servers | status | time to launch |", "|---|---|---|---|---|"]
    out += [f"| {s.recommendation_id} | {s.wave} | {', '.join(s.servers)} | {s.status} "
            f"| {shown(s.time_to_launch_seconds)} |" for s in recovery.servers]
    return out
