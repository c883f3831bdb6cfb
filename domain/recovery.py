"""The recovery-time figure of a plan of drills: how long each server and each wave took to launch.

A drill's time runs from its execution entering APPLYING (the `StartRecovery`) on the workflow's
clock. Each source server's ends when a poll first saw its recovery instance launched (the
execution view's `launches`, kept since generation-2026-12-05-launches, to within the poll
interval); so an item of several servers still gives one figure per server. An execution of an
older generation has only its own end, entering VERIFYING (every server launched): its servers
share that figure, marked `item`. A wave's figure runs from its first launch request to its last
server launched. Pure: the store supplies the instants, the report renders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

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
    server_launches: dict[str, datetime]


def launch_window(log: Sequence[dict[str, Any]]) -> tuple[datetime, datetime | None] | None:
    """When the execution entered APPLYING and then VERIFYING (its view's `log`, as stored); the
    second is None when it never got past applying, the whole None when it never applied."""
    started = launched = None
    for entry in log:
        status, at = entry.get("status"), entry.get("at")
        if status == ExecutionStatus.APPLYING.value and started is None and at:
            started = datetime.fromisoformat(str(at))
        elif status == ExecutionStatus.VERIFYING.value and started is not None and at:
            launched = datetime.fromisoformat(str(at))
            break
    return (started, launched) if started else None


class ServerLaunch(StrictModel):
    recommendation_id: str
    wave: str
    server_id: str = Field(description="The DRS source server.")
    status: str = Field(description="Its item's status.")
    time_to_launch_seconds: float | None = Field(default=None, description="None when it never launched.")
    launched_at: datetime | None = None
    measured: Literal["server", "item"] | None = Field(
        default=None, description="server: its own launch seen; item: only its item's end is known (older runs).")


class WaveLaunch(StrictModel):
    wave: str
    items: int
    launched: int = Field(description="Items every server of which launched.")
    servers: int = 0
    servers_launched: int = 0
    time_to_launch_seconds: float | None = Field(
        default=None, description="From the wave's first launch request to its last launched server.")
    slowest_item_seconds: float | None = None
    slowest_server_seconds: float | None = None


class RecoveryTime(StrictModel):
    servers: list[ServerLaunch] = Field(description="One row per source server of every drill item.")
    waves: list[WaveLaunch]
    total_seconds: float | None = Field(default=None, description="First launch request to last launch, all waves.")


def server_ids(recommendation: Any) -> list[str]:
    """The item's source servers, as the drill reads them (`source_server_ids`, default the resource)."""
    params = recommendation.params or {}
    return list(params.get("source_server_ids") or params.get("sourceServerIDs") or [recommendation.resource_id])


def server_rows(item: _Item, wave: str) -> list[ServerLaunch]:
    """Each server's launch: its own instant when the execution kept it, else its item's end."""
    rows = []
    for sid in server_ids(item.recommendation):
        at, measured = item.server_launches.get(sid), "server"
        if at is None and item.launched_at is not None:
            at, measured = item.launched_at, "item"
        timed = at is not None and item.launch_started_at is not None
        rows.append(ServerLaunch(
            recommendation_id=item.recommendation.id, wave=wave, server_id=sid, status=item.status,
            launched_at=at if timed else None, measured=measured if timed else None,
            time_to_launch_seconds=_seconds(item.launch_started_at, at) if timed else None))
    return rows


def recovery_time(items: Sequence[_Item], wave_names: dict[int, str]) -> RecoveryTime | None:
    """The figure for the plan's drill items; None when the plan has none."""
    drills = [i for i in items if i.recommendation is not None and i.recommendation.kind in LAUNCH_TIMED_KINDS]
    if not drills:
        return None
    servers: list[ServerLaunch] = []
    waves: list[WaveLaunch] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    for index in sorted({i.wave for i in drills}):
        name = wave_names.get(index, str(index))
        in_wave = [i for i in drills if i.wave == index]
        rows = [server_rows(item, name) for item in in_wave]
        launched = [r for item_rows in rows for r in item_rows if r.launched_at is not None]
        whole = [item_rows for item_rows in rows if item_rows and all(r.launched_at for r in item_rows)]
        wave_starts = [i.launch_started_at for i in in_wave if i.launch_started_at is not None]
        wave_ends = [r.launched_at for r in launched if r.launched_at is not None]
        starts += wave_starts
        ends += wave_ends
        waves.append(WaveLaunch(
            wave=name, items=len(in_wave), launched=len(whole),
            servers=sum(len(item_rows) for item_rows in rows), servers_launched=len(launched),
            time_to_launch_seconds=_seconds(min(wave_starts), max(wave_ends)) if wave_starts and wave_ends else None,
            slowest_item_seconds=max((max(r.time_to_launch_seconds or 0.0 for r in item_rows) for item_rows in whole),
                                     default=None),
            slowest_server_seconds=max((r.time_to_launch_seconds for r in launched
                                        if r.time_to_launch_seconds is not None), default=None)))
        servers += [r for item_rows in rows for r in item_rows]
    total = _seconds(min(starts), max(ends)) if starts and ends else None
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
           "| wave | items | launched | servers launched | time to launch | slowest server |",
           "|---|---|---|---|---|---|"]
    out += [f"| {w.wave} | {w.items} | {w.launched} | {w.servers_launched} of {w.servers} "
            f"| {shown(w.time_to_launch_seconds)} | {shown(w.slowest_server_seconds)} |" for w in recovery.waves]
    out += ["", "| item | wave | server | status | time to launch |", "|---|---|---|---|---|"]
    out += [f"| {s.recommendation_id} | {s.wave} | {s.server_id} | {s.status} "
            f"| {shown(s.time_to_launch_seconds)}{' (item)' if s.measured == 'item' else ''} |"
            for s in recovery.servers]
    return out
