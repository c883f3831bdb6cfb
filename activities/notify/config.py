"""The notify file (`RECLAIM_NOTIFY_FILE`): YAML read with its line numbers, validated, secrets resolved late.

Every problem names the line and the field (`notify.yaml:7: channels.ops.secret: ...`); a value
that looks like a secret (a Slack or Teams webhook URL, a Slack token, an AWS key) is refused
wherever it stands, and the message never repeats it. `resolve_secrets` turns a channel's
`env:NAME` / `file:/path` references into values at send time; nothing that holds them is a
pydantic model, enters a workflow history or prints them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from activities.notify.base import Secrets
from domain.notifications import ChannelBase, NotifyFile, looks_secret

Path_ = tuple[str | int, ...]

_INT = "tag:yaml.org,2002:int"
_CLOCK = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?$")


class NotifyFileError(ValueError):
    """The file cannot be used: every problem, each naming its line and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class SecretError(LookupError):
    """A secret reference that does not resolve (variable unset, file missing or empty)."""


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


class LineReader:
    """YAML -> plain data, remembering the line of every key and item."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.secret_like: list[Path_] = []
        self.tags: dict[Path_, Any] = {}  # the `type` of each mapping: pydantic puts it in error locations
        self._constructor = SafeConstructor()

    def build(self, node: Node, path: Path_ = ()) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, (*path, "<key>"))
                key = key if isinstance(key, str | int) else str(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*path, key))
            self.tags[path] = out.get("type")
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        if node.tag == _INT and _CLOCK.match(node.value):  # YAML 1.1 reads 22:00 as 1320 (base 60)
            return node.value
        if isinstance(node.value, str) and looks_secret(node.value):
            self.secret_like.append(path)
        return self._constructor.construct_object(node, deep=True)

    def where(self, loc: tuple[Any, ...]) -> tuple[int, str]:
        """The line and dotted field of a pydantic error location (union tags skipped)."""
        path: Path_ = ()
        for i, part in enumerate(loc):
            if (*path, part) in self.lines:
                path = (*path, part)
            elif part == self.tags.get(path):
                continue
            elif i == len(loc) - 1:  # a missing field: the line of its parent
                return self.lines.get(path, 1), _dotted((*path, part))
        return self.lines.get(path, 1), _dotted(path)


def read_yaml(text: str, source: str) -> tuple[Any, LineReader]:
    """The YAML's data and where each of its keys stands (`reader.where(loc)`: line and field).

    Raises ValueError naming the line when the text is not YAML at all.
    """
    reader = LineReader()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{source}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    return (reader.build(node) if node is not None else {}), reader


def parse_notify_file(text: str, source: str = "notify file") -> NotifyFile:
    try:
        raw, reader = read_yaml(text, source)
    except ValueError as exc:
        raise NotifyFileError([str(exc)]) from None
    if not isinstance(raw, dict):
        raise NotifyFileError([f"{source}:1: expected a mapping with channels and rules"])
    problems = {
        reader.where(path): "looks like a secret (a webhook URL or a token): inline secrets are refused; "
                            "give a secret field as env:NAME or file:/path"
        for path in reader.secret_like
    }
    try:
        parsed = NotifyFile.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            loc = (*error["loc"], "type") if error["type"].startswith("union_tag_") else error["loc"]
            problems.setdefault(reader.where(loc), error["msg"].removeprefix("Value error, "))
        parsed = None
    if parsed is not None:
        for path, message in parsed.problems():
            problems.setdefault(reader.where(path), message)
    if problems:
        raise NotifyFileError([f"{source}:{line}: {field}: {message}"
                               for (line, field), message in sorted(problems.items())])
    assert parsed is not None
    return parsed


def load_notify_file(path: str | Path) -> NotifyFile:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise NotifyFileError([f"{path}: cannot read it ({type(exc).__name__})"]) from None
    return parse_notify_file(text, str(path))


def resolve(ref: str) -> str:
    """The value an `env:NAME` or `file:/path` reference points at."""
    scheme, _, target = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise SecretError(f"environment variable {target} is not set")
    else:
        try:
            value = Path(target).read_text().strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {target} ({type(exc).__name__})") from None
    if not value:
        raise SecretError(f"secret {ref} is empty")
    return value


def resolve_secrets(channel: ChannelBase) -> Secrets:
    return Secrets({name: resolve(ref) for name, ref in channel.secret_refs().items()})
