"""The worker's change windows and freezes (`RECLAIM_WINDOWS_FILE`), asked by executions.

`ask_window` is a local activity: the answer is the file's as the worker reads it at
that moment, recorded in the history as a marker, so a freeze added while an
execution waits for its window is seen when it asks again at the opening. The file
is read again when it changes on disk; a change that does not parse is logged and
the last good file stays in force (a typo must not open every window).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError
from temporalio import activity

from activities.notify.config import read_yaml
from domain.windows import ChangeScope, WindowsFile, WindowVerdict, next_start

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
    """`path` None: no windows, no freezes (every change may start at once)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
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

    @activity.defn(name="ask_window")
    async def ask(self, change: ChangeScope) -> WindowVerdict:
        return next_start(self.rules(), change)
