"""What the savings ledger answers: per-execution entries and their totals."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from domain.base import StrictModel


class LedgerStatus(StrEnum):
    ACTIVE = "ACTIVE"
    """The change is in place and saving money."""
    REVERSED = "REVERSED"
    """The change was rolled back: the savings are gone."""


class SavingsEntry(StrictModel):
    """One ledger row: the savings of one completed execution."""

    execution_id: str
    customer_id: str
    account_id: str
    region: str
    kind: str
    resource_id: str
    estimated_monthly_savings: float
    actual_monthly_savings: float
    status: LedgerStatus
    recorded_at: datetime
    reversed_at: datetime | None = None


class KindSavings(StrictModel):
    """Totals of the ACTIVE entries of one kind."""

    estimated_monthly: float = 0.0
    actual_monthly: float = 0.0
    executions: int = 0


class SavingsSummary(StrictModel):
    """Totals over the ledger, for one customer or (customer_id None) for all.

    `executions`, `estimated_monthly`, `actual_monthly` and `by_kind` count ACTIVE
    entries only; rolled-back ones are in `reversed` / `reversed_actual_monthly`.
    """

    customer_id: str | None = None
    executions: int = 0
    estimated_monthly: float = 0.0
    actual_monthly: float = 0.0
    reversed: int = 0
    reversed_actual_monthly: float = 0.0
    by_kind: dict[str, KindSavings] = Field(default_factory=dict)
