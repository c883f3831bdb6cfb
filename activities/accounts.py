"""Reading the accounts file (`domain/accounts.py`): YAML with its line numbers, every problem named.

Problems name the line and the field (`accounts.yaml:9: accounts[1].enabled: Input should be a
valid boolean`); a value that looks like a secret (an AWS access key, a private key, a webhook) is
refused wherever it stands and never repeated; an external id is a reference (`env:NAME`,
`file:/path`) resolved only where the role is assumed. `AccountsSource` re-reads the file when it
changes, so the kill switch (`enabled: false`) holds at the next start without a restart.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import SequenceNode

from activities.notify.config import read_yaml
from domain.accounts import AccountsFile

_UNQUOTED_ID = ("an account id is 12 digits in quotes (\"012345678901\"): unquoted, YAML reads it as a "
                "number and drops leading zeros")


class AccountsFileError(ValueError):
    """The accounts file cannot be used: every problem, each naming its line and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_accounts_file(text: str, source: str = "accounts file") -> AccountsFile:
    try:
        raw, reader = read_yaml(text, source)
    except ValueError as exc:
        raise AccountsFileError([str(exc)]) from None
    if not isinstance(raw, dict):
        raise AccountsFileError([f"{source}:1: expected a mapping with `accounts:` (and optional `defaults:`)"])
    problems = {reader.where(path): "looks like a secret: inline secrets are refused; give an external id "
                                    "as env:NAME or file:/path" for path in reader.secret_like}
    for index, entry in enumerate(raw.get("accounts") or []):
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            problems.setdefault(reader.where(("accounts", index, "id")), _UNQUOTED_ID)
    parsed: AccountsFile | None = None
    try:
        parsed = AccountsFile.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            problems.setdefault(reader.where(error["loc"]), error["msg"].removeprefix("Value error, "))
    if parsed is not None:
        for path, message in [*parsed.problems(), *_unknown_kinds(parsed)]:
            problems.setdefault(reader.where(path), message)
    if problems:
        raise AccountsFileError([f"{source}:{line}: {field}: {message}"
                                 for (line, field), message in sorted(problems.items())])
    assert parsed is not None
    return parsed


def _unknown_kinds(parsed: AccountsFile) -> list[tuple[tuple[Any, ...], str]]:
    from activities.actions.base import registry

    known = registry()
    found: list[tuple[tuple[Any, ...], str]] = []
    lists: list[tuple[tuple[Any, ...], list[str] | None]] = [(("defaults", "kinds"), parsed.defaults.kinds)]
    lists += [(("accounts", i, "kinds"), a.kinds) for i, a in enumerate(parsed.accounts)]
    for path, kinds in lists:
        for j, kind in enumerate(kinds or []):
            if kind not in known:
                found.append(((*path, j), f"unknown action kind {kind!r}; known kinds: {', '.join(known)}"))
    return found


def load_accounts_file(path: str | Path) -> AccountsFile:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AccountsFileError([f"{path}: cannot read it ({type(exc).__name__})"]) from None
    return parse_accounts_file(text, str(path))


class AccountsSource:
    """The accounts file as it is now: read again when its modification time or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._file: AccountsFile | None = None

    def __call__(self) -> AccountsFile:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise AccountsFileError([f"{self.path}: cannot read it ({type(exc).__name__})"]) from None
        mark = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._file is not None and self._seen == mark:
                return self._file
        loaded = load_accounts_file(self.path)
        with self._lock:
            self._file, self._seen = loaded, mark
        return loaded


# ---- discovery (`reclaim accounts discover`) ---------------------------------------------------

_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def discovered(organizations: Any, known: set[str], *, customer_tag: str = "customer",
               default_customer: str = "unassigned") -> list[dict[str, Any]]:
    """The organization's active accounts not yet in the file, as entries to review: disabled."""
    entries = []
    for page in organizations.get_paginator("list_accounts").paginate():
        for account in page["Accounts"]:
            if account["Id"] in known or account.get("Status", "ACTIVE") != "ACTIVE":
                continue
            tags = organizations.list_tags_for_resource(ResourceId=account["Id"]).get("Tags", [])
            customer = next((t["Value"] for t in tags if t["Key"] == customer_tag), default_customer)
            entries.append({"id": account["Id"], "name": account["Name"],
                            "customer": customer if _CUSTOMER.match(customer) else default_customer,
                            "enabled": False})
    return sorted(entries, key=lambda e: str(e["id"]))


def with_discovered(text: str | None, entries: list[dict[str, Any]], note: str, *,
                    defaults: dict[str, Any] | None = None, source: str = "accounts file") -> str:
    """The file's text with `entries` appended to its `accounts:` list (its comments and order kept),
    or a new file when there is none; the result must load (AccountsFileError otherwise)."""
    if not text or not text.strip():
        body: dict[str, Any] = {"defaults": defaults} if defaults else {}
        body["accounts"] = entries
        result = f"# {note}\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    else:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        items = _accounts_node(node, source)
        column = items.start_mark.column
        block = yaml.safe_dump(entries, sort_keys=False, default_flow_style=False)
        lines = [f"{' ' * column}# {note}"] + [f"{' ' * column}{line}" for line in block.splitlines()]
        result = text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    parse_accounts_file(result, source)
    return result


def _accounts_node(node: Any, source: str) -> SequenceNode:
    """The `accounts:` block list, which must end the file so that appending extends it."""
    from yaml.nodes import MappingNode

    if not isinstance(node, MappingNode):
        raise AccountsFileError([f"{source}:1: expected a mapping with `accounts:`"])
    keys = [(k.value, v) for k, v in node.value]
    if not keys or keys[-1][0] != "accounts" or not isinstance(keys[-1][1], SequenceNode) \
            or keys[-1][1].flow_style or not keys[-1][1].value:
        raise AccountsFileError([f"{source}: to append discovered accounts, `accounts:` must be the file's "
                                 "last key and a non-empty block list; or write them elsewhere with --out"])
    items: SequenceNode = keys[-1][1]
    return items
