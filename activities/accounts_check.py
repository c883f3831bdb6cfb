"""`reclaim accounts check`: per account and region, can the role be assumed, and may it do what
the kinds allowed there need?

Each needed IAM action is probed where AWS lets one ask without acting: a mutation with
`DryRun=True` (EC2: `DryRunOperation` means allowed), a read by reading a little, or a read of a
resource that does not exist (AWS checks the permission first: NotFound means allowed). AWS
answering AccessDenied / UnauthorizedOperation means missing. An action with no such probe
(RDS, S3, Lambda... mutations have no DryRun) is reported `unproven`, never as passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from activities.aws import SessionFactory
from activities.errors import client_error_code
from activities.iam import permissions
from domain.accounts import Account, AccountsFile

_NONE = {
    "instance": "i-00000000000000000", "volume": "vol-00000000000000000",
    "snapshot": "snap-00000000000000000", "image": "ami-00000000000000000",
    "allocation": "eipalloc-00000000000000000", "template": "lt-00000000000000000",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
           "UnauthorizedException", "InvalidClientTokenId", "ExpiredToken"}


@dataclass(frozen=True)
class Probe:
    service: str
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False


def _ec2(method: str, dry_run: bool = True, **kwargs: Any) -> Probe:
    return Probe("ec2", method, kwargs, dry_run)


#: IAM action -> a call that proves it without changing anything.
PROBES: dict[str, Probe] = {
    "ec2:DescribeInstances": _ec2("describe_instances", MaxResults=5),
    "ec2:DescribeVolumes": _ec2("describe_volumes", MaxResults=5),
    "ec2:DescribeSnapshots": _ec2("describe_snapshots", OwnerIds=["self"], MaxResults=5),
    "ec2:DescribeImages": _ec2("describe_images", Owners=["self"]),
    "ec2:DescribeAddresses": _ec2("describe_addresses"),
    "ec2:DescribeVolumesModifications": _ec2("describe_volumes_modifications", MaxResults=5),
    "ec2:DescribeInstanceStatus": _ec2("describe_instance_status", MaxResults=5),
    "ec2:DescribeInstanceAttribute": _ec2("describe_instance_attribute", InstanceId=_NONE["instance"],
                                          Attribute="instanceType"),
    "ec2:DescribeLaunchTemplateVersions": _ec2("describe_launch_template_versions",
                                               LaunchTemplateId=_NONE["template"]),
    "ec2:StopInstances": _ec2("stop_instances", InstanceIds=[_NONE["instance"]]),
    "ec2:StartInstances": _ec2("start_instances", InstanceIds=[_NONE["instance"]]),
    "ec2:TerminateInstances": _ec2("terminate_instances", InstanceIds=[_NONE["instance"]]),
    "ec2:ModifyInstanceAttribute": _ec2("modify_instance_attribute", InstanceId=_NONE["instance"],
                                        InstanceType={"Value": "t3.micro"}),
    "ec2:CreateSnapshot": _ec2("create_snapshot", VolumeId=_NONE["volume"]),
    "ec2:CreateVolume": _ec2("create_volume", SnapshotId=_NONE["snapshot"], AvailabilityZone="{region}a"),
    "ec2:DeleteVolume": _ec2("delete_volume", VolumeId=_NONE["volume"]),
    "ec2:ModifyVolume": _ec2("modify_volume", VolumeId=_NONE["volume"], VolumeType="gp3"),
    "ec2:DeleteSnapshot": _ec2("delete_snapshot", SnapshotId=_NONE["snapshot"]),
    "ec2:CreateTags": _ec2("create_tags", Resources=[_NONE["volume"]], Tags=[{"Key": "reclaim:check", "Value": "1"}]),
    "ec2:ReleaseAddress": _ec2("release_address", AllocationId=_NONE["allocation"]),
    "ec2:AllocateAddress": _ec2("allocate_address", Domain="vpc"),
    "ec2:CreateImage": _ec2("create_image", InstanceId=_NONE["instance"], Name="reclaim-check"),
    "ec2:DeregisterImage": _ec2("deregister_image", ImageId=_NONE["image"]),
    "ec2:RunInstances": _ec2("run_instances", ImageId=_NONE["image"], MinCount=1, MaxCount=1),
    "ec2:CreateLaunchTemplateVersion": _ec2("create_launch_template_version", LaunchTemplateId=_NONE["template"],
                                            LaunchTemplateData={}),
    "rds:DescribeDBInstances": Probe("rds", "describe_db_instances", {"MaxRecords": 20}),
    "rds:DescribeDBSnapshots": Probe("rds", "describe_db_snapshots", {"MaxRecords": 20}),
    "autoscaling:DescribeAutoScalingGroups": Probe("autoscaling", "describe_auto_scaling_groups", {"MaxRecords": 1}),
    "autoscaling:DescribeScalingActivities": Probe("autoscaling", "describe_scaling_activities", {"MaxRecords": 1}),
    "autoscaling:DescribeLaunchConfigurations": Probe("autoscaling", "describe_launch_configurations",
                                                      {"MaxRecords": 1}),
    "dynamodb:DescribeTable": Probe("dynamodb", "describe_table", {"TableName": "reclaim-check-none"}),
    "lambda:GetFunctionConfiguration": Probe("lambda", "get_function_configuration",
                                             {"FunctionName": "reclaim-check-none"}),
    "logs:DescribeLogGroups": Probe("logs", "describe_log_groups", {"limit": 1}),
    "sts:GetCallerIdentity": Probe("sts", "get_caller_identity"),
}


@dataclass
class CheckRow:
    account_id: str
    name: str
    region: str
    assumed: str
    """The assumed identity's ARN, or why the role could not be assumed."""
    ok: bool
    missing: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    proven: int = 0


def probe(client: Any, found: Probe, region: str) -> str | None:
    """None when allowed; else the AWS error code that says it is not (or could not be told)."""
    kwargs = {k: (v.format(region=region) if isinstance(v, str) else v) for k, v in found.kwargs.items()}
    if found.dry_run:
        kwargs["DryRun"] = True
    try:
        getattr(client, found.method)(**kwargs)
    except ClientError as exc:
        code = client_error_code(exc)
        if code == "DryRunOperation" or "NotFound" in code or code.endswith(".Malformed"):
            return None
        return code
    return None


def check_account(sessions: SessionFactory, accounts: AccountsFile, account: Account, region: str) -> CheckRow:
    """Assume the account's role (as `sessions.session_name`) in `region` and probe what its kinds need."""
    row = CheckRow(account.id, account.name, region, assumed="", ok=False)
    try:
        row.assumed = str(sessions.client(account.id, region, "sts").get_caller_identity()["Arn"])
    except ClientError as exc:
        row.assumed = f"cannot assume {accounts.role_arn(account) or 'the default chain'}: {client_error_code(exc)}"
        return row
    except LookupError as exc:  # an external id's reference that does not resolve
        row.assumed = f"cannot assume: {exc}"
        return row
    for action in permissions(accounts.kinds(account)):
        found = PROBES.get(action)
        if found is None:
            row.unproven.append(action)
            continue
        code = probe(sessions.client(account.id, region, found.service), found, region)
        if code is None:
            row.proven += 1
        elif code in _DENIED:
            row.missing.append(action)
        else:
            row.errors.append(f"{action}: {code}")
    row.ok = not row.missing and not row.errors
    return row


def check_all(sessions: SessionFactory, accounts: AccountsFile, only: list[str] | None = None,
              regions: list[str] | None = None) -> list[CheckRow]:
    rows = []
    for account in accounts.accounts:
        if only and account.id not in only:
            continue
        for region in regions or accounts.regions(account) or ["us-east-1"]:
            rows.append(check_account(sessions, accounts, account, region))
    return rows
