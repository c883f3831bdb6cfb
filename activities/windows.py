"""The worker's change windows and freezes (`RECLAIM_WINDOWS_FILE`), asked by executions.

`ask_window` is a local activity: the answer is the file's as the worker reads it at
that moment, recorded in the history as a marker, so a freeze added while an
execution waits for its window is seen when it asks again at the opening. The file
is read again when it changes on disk; a change that does not parse is logged and
the last good file stays in force (a typo must not open every window).

An entry naming an SSM maintenance window or Change Calendar is read in the change's own
account and region (`activities/ssm_windows.py`, cached for minutes) off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError
from temporalio import activity

from activities.aws import SessionFactory
from activities.notify.config import read_yaml
from activities.ssm_windows import DEFAULT_TTL, SsmReader
from domain.windows import ChangeScope, Lookups, WindowsFile, WindowVerdict, next_start

log = logging.getLogger("reclaim.windows")


class WindowsFileError(ValueError):
    """The file cannot be used: every problem, each naming its line and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_windows_file(text: str, source: str = "windows file") -> WindowsFile:
    try:
        raw, reader = read_yaml(text, source)
    except ValueError as exc:
        raise WindowsFileError([str(exc)]) from None
    if not isinstance(raw, dict):
        raise WindowsFileError([f"{source}:1: expected a mapping with windows and freezes"])
    try:
        return WindowsFile.model_validate(raw)
    except ValidationError as exc:
        problems: dict[tuple[int, str], str] = {}
        for error in exc.errors(include_input=False, include_url=False):
            problems.setdefault(reader.where(error["loc"]), error["msg"].removeprefix("Value error, "))
        raise WindowsFileError([f"{source}:{line}: {field}: {message}"
                                for (line, field), message in sorted(problems.items())]) from None


def load_windows_file(path: str | Path) -> WindowsFile:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise WindowsFileError([f"{path}: cannot read it ({type(exc).__name__})"]) from None
    return parse_windows_file(text, str(path))


class WindowActivities:
    """`path` None: no windows, no freezes (every change may start at once). `sessions`: how the
    accounts' SSM windows and calendars are read (None: a file naming one refuses what it covers)."""

    def __init__(self, path: Path | None = None, *, sessions: SessionFactory | None = None,
                 ssm_ttl: timedelta = DEFAULT_TTL) -> None:
        self._path = path
        self.ssm = SsmReader(sessions, ssm_ttl)
        self._rules = load_windows_file(path) if path is not None else WindowsFile()
        self._stamp = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return self._path.stat().st_mtime if self._path is not None else None
        except OSError:
            return None

    def rules(self) -> WindowsFile:
        stamp = self._mtime()
        if self._path is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._rules = load_windows_file(self._path)
                log.info("windows file %s read again", self._path)
            except WindowsFileError as exc:
                log.error("windows file %s changed but cannot be used, the last good one stays: %s",
                          self._path, exc)
        return self._rules

    def lookups(self, rules: WindowsFile, change: ChangeScope) -> Lookups:
        """The SSM windows and calendars covering the change, as its account says now (blocking)."""
        return self.ssm.lookups(rules, change)

    @activity.defn(name="ask_window")
    async def ask(self, change: ChangeScope) -> WindowVerdict:
        rules = self.rules()
        if not any(w.ssm_window for w in rules.windows) and not any(f.change_calendar for f in rules.freezes):
            return next_start(rules, change)
        return next_start(rules, change, await asyncio.to_thread(self.lookups, rules, change))
