"""The SQL read model: executions, approvals, recommendations and the savings ledger, queryable by the CLI and API.

Temporal stays the source of truth; this is a copy kept current by idempotent
activity writes. Usage: `store = await Store.open(url)` (None: `.reclaim/reclaim.db`).
"""

from domain.execution import LastChange
from store.repository import MUTATED, NEW, STALE, ExecutionPage, Store, StoredRecommendation
from store.savings import KindSavings, LedgerStatus, SavingsEntry, SavingsSummary

__all__ = [
    "MUTATED",
    "NEW",
    "STALE",
    "ExecutionPage",
    "KindSavings",
    "LastChange",
    "LedgerStatus",
    "SavingsEntry",
    "SavingsSummary",
    "Store",
    "StoredRecommendation",
]
