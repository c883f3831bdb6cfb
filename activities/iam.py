"""The least-privilege IAM policy of the role Reclaim assumes, from the kinds' declared permissions.

Each kind declares the calls it makes (`Action.permissions`; the registry meta-test holds it to
what its code calls); the policy allows exactly their union for the kinds asked, plus what the
worker itself reads there (`WORKER_READS`). `iam:PassRole` (an instance relaunched with its
profile) is allowed only towards EC2.
"""

from __future__ import annotations

from typing import Any

from activities.actions.base import action_class, registry

#: What the worker reads in every account besides the kinds' own calls: who it is there
#: (`reclaim accounts check`), the resources' CloudWatch metrics (scan, the watch after a change),
#: the account's SSM maintenance windows and Change Calendars named in the windows file
#: (`activities/ssm_windows.py`) and Cost Explorer's costs (the savings check, `activities/savings.py`).
WORKER_READS = (
    "sts:GetCallerIdentity", "cloudwatch:GetMetricData", "cloudwatch:ListMetrics",
    "ssm:DescribeMaintenanceWindows", "ssm:GetMaintenanceWindow", "ssm:GetCalendarState",
    "ce:GetCostAndUsage", "ce:GetCostAndUsageWithResources",
)

_PASS_ROLE = "iam:PassRole"


def permissions(kinds: list[str] | None = None) -> list[str]:
    """The IAM actions the kinds need (every kind when None), sorted, each once."""
    classes = [action_class(kind) for kind in kinds] if kinds else list(registry().values())
    return sorted({p for cls in classes for p in cls.permissions})


def policy_document(kinds: list[str] | None = None) -> dict[str, Any]:
    """The role's permissions policy: one statement per service, the worker's reads, PassRole apart."""
    needed = permissions(kinds)
    by_service: dict[str, list[str]] = {}
    for action in needed:
        if action != _PASS_ROLE:
            by_service.setdefault(action.split(":")[0], []).append(action)
    statements: list[dict[str, Any]] = [
        {"Sid": f"Reclaim{service.title().replace('-', '')}", "Effect": "Allow", "Action": actions,
         "Resource": "*"} for service, actions in sorted(by_service.items())
    ]
    statements.append({"Sid": "ReclaimWorkerReads", "Effect": "Allow", "Action": sorted(WORKER_READS),
                       "Resource": "*"})
    if _PASS_ROLE in needed:
        statements.append({"Sid": "ReclaimPassRoleToEc2", "Effect": "Allow", "Action": _PASS_ROLE,
                           "Resource": "*", "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}})
    return {"Version": "2012-10-17", "Statement": statements}


def trust_document(principal_arn: str, external_id: bool = True) -> dict[str, Any]:
    """The role's trust policy: the worker's principal may assume it, with the external id."""
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": "sts:AssumeRole"}
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": "<the external id you set>"}}
    return {"Version": "2012-10-17", "Statement": [statement]}
