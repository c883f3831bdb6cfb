"""The identities file (`RECLAIM_IDENTITIES_FILE`): who a Slack user is in Reclaim.

A Slack click carries only Slack's user id. The file maps it to the Reclaim user who decides
(the name in the approvals audit trail, the one compared with the requester), that user's
role and the customers they may act for, exactly like an API token entry:

    slack:
      U024BE7LH: {user: bob, role: approver, customers: [acme]}
      U0G9QF9C6: {user: carol, role: admin, customers: ["*"]}

A Slack user not in the file is refused. Errors name the line and the field
(`identities.yaml:3: slack.U024BE7LH.role: Input should be 'viewer', ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from activities.notify.config import read_yaml
from domain.base import StrictModel
from domain.policy import Role
from starter.api.auth import Principal

SlackUserId = Annotated[str, Field(pattern=r"^[UW][A-Z0-9]{2,30}$", description="Slack's user id, e.g. U024BE7LH.")]


class Identity(StrictModel):
    user: str = Field(min_length=1, max_length=128, description="The Reclaim user this person acts as.")
    role: Role
    customers: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description='Customer ids, or ["*"] for every customer.')

    def principal(self) -> Principal:
        return Principal(self.user, self.role, frozenset(self.customers))


class IdentitiesFile(StrictModel):
    slack: dict[SlackUserId, Identity] = Field(default_factory=dict)

    def for_slack(self, user_id: str) -> Principal | None:
        found = self.slack.get(user_id)
        return None if found is None else found.principal()


class IdentitiesFileError(ValueError):
    """The identities file cannot be used: every problem, each naming its line and field."""


def parse_identities(text: str, source: str = "identities file") -> IdentitiesFile:
    try:
        raw, reader = read_yaml(text, source)
    except ValueError as exc:
        raise IdentitiesFileError(str(exc)) from None
    if not isinstance(raw, dict):
        raise IdentitiesFileError(f"{source}:1: expected a mapping with `slack:` (Slack user id -> user, role, customers)")
    try:
        return IdentitiesFile.model_validate(raw)
    except ValidationError as exc:
        problems: dict[tuple[int, str], str] = {}
        for error in exc.errors(include_input=False, include_url=False):
            loc = tuple(part for part in error["loc"] if part != "[key]")
            problems.setdefault(reader.where(loc), error["msg"].removeprefix("Value error, "))
        raise IdentitiesFileError("; ".join(f"{source}:{line}: {field}: {message}"
                                            for (line, field), message in sorted(problems.items()))) from None


def load_identities(path: Path | None) -> IdentitiesFile:
    """The file's identities; none configured: nobody (every Slack user is refused)."""
    if path is None:
        return IdentitiesFile()
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentitiesFileError(f"{path}: cannot read it ({type(exc).__name__})") from None
    return parse_identities(text, str(path))
