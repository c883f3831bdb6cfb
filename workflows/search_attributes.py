"""Search attributes that make executions findable in the Web UI and by `temporal workflow list`."""

from temporalio.common import SearchAttributeKey

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
ACCOUNT_ID = SearchAttributeKey.for_keyword("AccountId")
RESOURCE_ID = SearchAttributeKey.for_keyword("ResourceId")
ACTION_KIND = SearchAttributeKey.for_keyword("ActionKind")
RISK_LEVEL = SearchAttributeKey.for_keyword("RiskLevel")
# "ExecutionStatus" is Temporal's own reserved attribute (the workflow's run status), so ours
# is named ReclaimStatus.
EXECUTION_STATUS = SearchAttributeKey.for_keyword("ReclaimStatus")

ALL = (CUSTOMER_ID, ACCOUNT_ID, RESOURCE_ID, ACTION_KIND, RISK_LEVEL, EXECUTION_STATUS)
