"""AWS Cost Optimization Hub: ListRecommendations (paged, filtered by the hub), then GetRecommendation
for the resource details (instance types, volume types, Lambda memory) of those Reclaim can act on.

`aws cost-optimization-hub list-recommendations` lives in us-east-1 whatever the resources' region.
"""

from __future__ import annotations

from typing import Any

from activities.sources import Source, SourceFilters, pages, register
from domain.sources import COH, SourceItem, coh_mappings


def hub_filter(filters: SourceFilters) -> dict[str, Any]:
    """The hub's own `filter` from ours (it filters server-side on all of them)."""
    wanted: dict[str, Any] = {
        "accountIds": filters.account_ids, "regions": filters.regions, "actionTypes": filters.action_types,
        "resourceTypes": filters.resource_types,
        "tags": [{"key": k, "value": v} for k, v in sorted(filters.tags.items())],
    }
    return {key: value for key, value in wanted.items() if value}


def fetch(client: Any, filters: SourceFilters) -> list[SourceItem]:
    """Every recommendation the hub lists; details fetched only for the (action, resource type)
    pairs that map to a kind (the others are counted as not executable from the list alone)."""
    mapped = set(coh_mappings())
    wanted = hub_filter(filters)
    kwargs: dict[str, Any] = {"filter": wanted} if wanted else {}
    items = []
    for item in pages(client.list_recommendations, "items", **kwargs):
        details: dict[str, Any] = {}
        if (item.get("actionType"), item.get("currentResourceType")) in mapped and item.get("recommendationId"):
            answer = client.get_recommendation(recommendationId=item["recommendationId"])
            details = {key: value for key, value in answer.items() if key != "ResponseMetadata"}
        items.append(SourceItem(source=COH, shape="coh", item=item, details=details))
    return items


SOURCE = register(Source(name=COH, service="cost-optimization-hub", fetch=fetch, home_region="us-east-1"))
