"""AWS Trusted Advisor (the `trustedadvisor` API): the cost-optimizing checks, their account
recommendations, and each recommendation's flagged resources (status warning or error, not
excluded). The check (id, column names) and the recommendation travel with each resource."""

from __future__ import annotations

from typing import Any

from activities.sources import Source, SourceFilters, pages, register
from domain.sources import TRUSTED_ADVISOR, SourceItem

PILLAR = "cost_optimizing"
FLAGGED = ("warning", "error")


def fetch(client: Any, filters: SourceFilters) -> list[SourceItem]:
    checks = {c["arn"]: c for c in pages(client.list_checks, "checkSummaries", pillar=PILLAR, language="en")}
    items = []
    for rec in pages(client.list_recommendations, "recommendationSummaries", pillar=PILLAR):
        if rec.get("lifecycleStage") in ("dismissed", "resolved"):
            continue
        check = checks.get(rec.get("checkArn", ""), {})
        for resource in pages(client.list_recommendation_resources, "recommendationResourceSummaries",
                              recommendationIdentifier=rec["arn"]):
            if resource.get("status") not in FLAGGED or resource.get("exclusionStatus") == "excluded":
                continue
            if filters.regions and resource.get("regionCode") not in filters.regions:
                continue
            items.append(SourceItem(source=TRUSTED_ADVISOR, shape="ta", item=resource,
                                    details={"recommendation": rec, "check": check}))
    return items


SOURCE = register(Source(name=TRUSTED_ADVISOR, service="trustedadvisor", fetch=fetch, home_region="us-east-1"))
