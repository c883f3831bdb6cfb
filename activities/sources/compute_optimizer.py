"""AWS Compute Optimizer: EC2, EBS, Lambda, RDS and idle recommendations, each a paged `Get*`
operation with its own list key. Regional: one client per region. Per-resource errors the
service returns beside the items are carried as items of shape `co.error` and counted."""

from __future__ import annotations

from typing import Any

from activities.sources import Source, SourceFilters, pages, register
from domain.sources import COMPUTE_OPTIMIZER, SourceItem

#: shape -> (client method, list key). Operations this botocore lacks are passed over.
OPERATIONS: dict[str, tuple[str, str]] = {
    "co.ec2": ("get_ec2_instance_recommendations", "instanceRecommendations"),
    "co.ebs": ("get_ebs_volume_recommendations", "volumeRecommendations"),
    "co.lambda": ("get_lambda_function_recommendations", "lambdaFunctionRecommendations"),
    "co.rds": ("get_rds_database_recommendations", "rdsDBRecommendations"),
    "co.idle": ("get_idle_recommendations", "idleRecommendations"),
}


def fetch(client: Any, filters: SourceFilters) -> list[SourceItem]:
    kwargs: dict[str, Any] = {"accountIds": filters.account_ids} if filters.account_ids else {}
    items = []
    for shape, (method, list_key) in OPERATIONS.items():
        call = getattr(client, method, None)
        if call is None:
            continue
        errors: list[dict[str, Any]] = []

        def paged(errors: list[dict[str, Any]] = errors, call: Any = call, **kw: Any) -> dict[str, Any]:
            page: dict[str, Any] = call(**kw)
            errors.extend(page.get("errors") or [])
            return page

        items += [SourceItem(source=COMPUTE_OPTIMIZER, shape=shape, item=item)
                  for item in pages(paged, list_key, **kwargs)]
        items += [SourceItem(source=COMPUTE_OPTIMIZER, shape="co.error", item={**error, "operation": list_key})
                  for error in errors]
    return items


SOURCE = register(Source(name=COMPUTE_OPTIMIZER, service="compute-optimizer", fetch=fetch))
