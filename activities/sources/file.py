"""Saved AWS CLI output (`aws cost-optimization-hub list-recommendations > recs.json`, Compute
Optimizer's `get-*-recommendations`), for a user whose Reclaim host cannot reach the APIs.
Which output it is is recognised by its shape (`domain.sources.items_from_cli_output`)."""

from __future__ import annotations

import json
from pathlib import Path

from activities.sources import SourceError
from domain.sources import SourceItem, UnknownOutput, items_from_cli_output


def read(path: Path) -> tuple[str, list[SourceItem]]:
    """(source, items) of the file; SourceError, one line, when it cannot be read or recognised."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        return items_from_cli_output(data)
    except UnknownOutput as exc:
        raise SourceError(f"{path}: {exc}") from None
