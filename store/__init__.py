"""The SQL read model: executions, approvals and recommendations, queryable by the CLI and API.

Temporal stays the source of truth; this is a copy kept current by idempotent
activity writes. Usage: `store = await Store.open(url)` (None: `.reclaim/reclaim.db`).
"""

from store.repository import NEW, ExecutionPage, Store, StoredRecommendation

__all__ = ["NEW", "ExecutionPage", "Store", "StoredRecommendation"]
