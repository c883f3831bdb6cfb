"""What a recommender (Cost Explorer, Compute Optimizer, a FinOps script) asks Reclaim to do."""

from datetime import datetime
from typing import Any

from pydantic import Field

from domain.base import StrictModel

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: Ids, names and ARNs of AWS resources: printable ASCII without spaces or control characters.
RESOURCE_ID_PATTERN = r"^[\x21-\x7e]{1,512}$"


class Recommendation(StrictModel):
    """One change to one resource, with the facts the recommender saw when it made it.

    `params` are kind-specific (e.g. `{"expected_instance_type": "m5.2xlarge",
    "target_instance_type": "m5.large"}`) and are validated by the kind's own
    params model; the expectations in them are what drift is checked against.
    """

    id: str = Field(pattern=ID_PATTERN, description="Stable recommendation id; the execution id derives from it.")
    customer_id: str = Field(pattern=ID_PATTERN)
    account_id: str = Field(pattern=r"^[0-9]{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
    kind: str = Field(pattern=r"^[a-z0-9]+\.[a-z0-9_]+$", examples=["ec2.stop"])
    resource_id: str = Field(
        pattern=RESOURCE_ID_PATTERN, description="The resource's AWS id or name (printable ASCII, no spaces); "
        "each kind checks its own form, e.g. i-0123456789abcdef0 for EC2 instances.")
    params: dict[str, Any] = Field(default_factory=dict)
    estimated_monthly_savings: float = Field(ge=0, le=10_000_000)
    tags: dict[str, str] = Field(default_factory=dict, description="Tags as the recommender saw them.")
    source: str = Field(default="manual", max_length=64)
    source_id: str | None = Field(
        default=None, max_length=1024,
        description="The recommender's own id for it (Cost Optimization Hub's recommendationId, a resource ARN).")
    source_details: dict[str, Any] = Field(
        default_factory=dict, description="What the recommender said besides the change: risk inputs "
        "(restartNeeded, rollbackPossible, implementationEffort), finding, currency, look-back.")
    created_at: datetime | None = None
