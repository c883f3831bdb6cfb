"""Bearer tokens -> who is calling, with which role, for which customers.

Tokens are configured hashed (sha256) or in plain text that is hashed at load
and never kept; presented tokens are hashed and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from domain.base import StrictModel
from domain.policy import Role
from runtime.logmask import register_secret

ROLE_ORDER = [Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN]
ALL_CUSTOMERS = "*"


class TokenEntry(StrictModel):
    subject: str = Field(min_length=1)
    role: Role
    customers: list[str] = Field(min_length=1, description='Customer ids, or ["*"] for every customer.')
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    token: str | None = Field(default=None, min_length=16, repr=False)

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError("give exactly one of sha256 or token")
        return self

    def digest(self) -> str:
        return self.sha256 or hash_token(self.token or "")


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    customers: frozenset[str]

    def at_least(self, role: Role) -> bool:
        return ROLE_ORDER.index(self.role) >= ROLE_ORDER.index(role)

    def sees(self, customer_id: str) -> bool:
        return ALL_CUSTOMERS in self.customers or customer_id in self.customers

    def customer_filter(self) -> frozenset[str] | None:
        """None when every customer is visible."""
        return None if ALL_CUSTOMERS in self.customers else self.customers


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, entries: list[TokenEntry]) -> None:
        for entry in entries:
            register_secret(entry.token)  # a token given in plain text never reaches a log line
        self._by_digest = {
            e.digest(): Principal(e.subject, e.role, frozenset(e.customers)) for e in entries
        }

    @classmethod
    def load(cls, path: Path | None = None, inline: str | None = None) -> TokenStore:
        raw: Any = []
        if path is not None:
            raw = yaml.safe_load(Path(path).read_text())  # YAML, or JSON (a subset of YAML)
        elif inline:
            raw = json.loads(inline)
        if isinstance(raw, dict):
            raw = raw.get("tokens", [])
        return cls([TokenEntry.model_validate(item) for item in raw])

    def authenticate(self, presented: str) -> Principal | None:
        digest = hash_token(presented)
        found = None
        for known, principal in self._by_digest.items():  # constant time per entry, no early exit
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def __len__(self) -> int:
        return len(self._by_digest)
