"""From what a recommender says to what Reclaim can do: pure mappings, one registry per source shape.

A source (Cost Optimization Hub, Compute Optimizer, Trusted Advisor, a saved AWS CLI output)
hands over `SourceItem`s: the item as the AWS API returned it, tagged with its shape (which
list it came from) and, where the source has them, details fetched beside it. `map_item` turns
each into a `Recommendation`, or into a `Skipped` that says why Reclaim cannot act on it yet.
Nothing is dropped: `build_report` counts every skipped item by (source, action type, resource
type, reason).

The mapping never reads free text (summaries, finding descriptions): only typed fields.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError

from domain.base import StrictModel
from domain.policy import RiskLevel
from domain.recommendation import ID_PATTERN, Recommendation

COH = "cost-optimization-hub"
COMPUTE_OPTIMIZER = "compute-optimizer"
TRUSTED_ADVISOR = "trusted-advisor"

_ACCOUNT = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")


class SourceItem(StrictModel):
    """One item as the source's API returned it (camelCase keys kept), tagged with its shape."""

    source: str
    shape: str = Field(description="Which list it came from, e.g. 'coh', 'co.ec2', 'co.idle', 'ta'.")
    item: dict[str, Any]
    details: dict[str, Any] = Field(
        default_factory=dict, description="Fetched beside the item: GetRecommendation's answer, "
        "the Trusted Advisor check and recommendation the resource belongs to.")


class ImportContext(StrictModel):
    """What the importer knows that the item may not say."""

    customer_id: str = Field(pattern=ID_PATTERN)
    account_id: str | None = None
    region: str | None = None


class Skipped(StrictModel):
    """An item Reclaim cannot execute (yet), and why."""

    source: str
    action_type: str
    resource_type: str
    reason: str


class NotExecutable(StrictModel):
    source: str
    action_type: str
    resource_type: str
    reason: str
    count: int = Field(ge=1)


class ImportReport(StrictModel):
    """What an import brought in and what it could not act on, counted, never silently dropped."""

    source: str
    recommendations: list[Recommendation] = Field(default_factory=list)
    not_executable: list[NotExecutable] = Field(default_factory=list)

    @property
    def imported_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(r.kind for r in self.recommendations).items()))

    @property
    def not_executable_total(self) -> int:
        return sum(n.count for n in self.not_executable)


def build_report(source: str, outcomes: Iterable[Recommendation | Skipped]) -> ImportReport:
    """Recommendations in the order met (the last of a repeated id wins); skipped ones counted."""
    recs: dict[str, Recommendation] = {}
    skipped: Counter[tuple[str, str, str, str]] = Counter()
    for outcome in outcomes:
        if isinstance(outcome, Recommendation):
            recs[outcome.id] = outcome
        else:
            skipped[(outcome.source, outcome.action_type, outcome.resource_type, outcome.reason)] += 1
    return ImportReport(
        source=source,
        recommendations=list(recs.values()),
        not_executable=[
            NotExecutable(source=s, action_type=a, resource_type=t, reason=r, count=n)
            for (s, a, t, r), n in sorted(skipped.items())
        ],
    )


# ---- helpers -------------------------------------------------------------------------------


def _get(data: Any, *path: str) -> Any:
    """`data[path[0]][path[1]]...`, or None where a step is missing or not a mapping."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _str(value: Any) -> str | None:
    """A non-blank string, stripped (as every StrictModel strips), else None."""
    return value.strip() or None if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    """An integral number (AWS sends sizes as doubles: 100.0), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


def _savings(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        return 0.0
    return float(min(max(value, 0.0), 10_000_000.0))


def arn_parts(arn: str | None) -> tuple[str | None, str | None, str | None]:
    """(region, account, resource) of an ARN; Nones when it is not one."""
    if not arn or not arn.startswith("arn:"):
        return None, None, None
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None, None, None
    return parts[3] or None, parts[4] or None, parts[5] or None


def resource_name_from_arn(arn: str | None) -> str | None:
    """The name or id an ARN ends with, per the resource types Reclaim acts on.

    instance/i-1 -> i-1; volume/vol-1 -> vol-1; db:name -> name; function:name[:qualifier] -> name;
    autoScalingGroup:uuid:autoScalingGroupName/name -> name.
    """
    _, _, resource = arn_parts(arn)
    if resource is None:
        return None
    if resource.startswith("function:"):
        return resource.split(":")[1] or None
    if "autoScalingGroupName/" in resource:
        return resource.split("autoScalingGroupName/", 1)[1] or None
    for sep in ("/", ":"):
        if sep in resource:
            return resource.rsplit(sep, 1)[1] or None
    return resource


def recommendation_id(prefix: str, natural: str) -> str:
    """`prefix-natural` when that is a valid id, else `prefix-<hash of natural>`: stable across imports."""
    candidate = f"{prefix}-{natural}"
    if re.fullmatch(ID_PATTERN, candidate):
        return candidate
    return f"{prefix}-{hashlib.sha256(natural.encode()).hexdigest()[:40]}"


def _tags(raw: Any) -> dict[str, str]:
    """AWS's [{key, value}] (any capitalisation) as a dict; malformed entries ignored."""
    tags: dict[str, str] = {}
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            continue
        key = entry.get("key", entry.get("Key"))
        value = entry.get("value", entry.get("Value", ""))
        if isinstance(key, str) and isinstance(value, str):
            tags[key] = value
    return tags


def _created_at(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class _Draft(StrictModel):
    """What a per-shape mapper decides; `finish` adds what every source shares and validates."""

    kind: str
    resource_id: str | None
    params: dict[str, Any] = Field(default_factory=dict)


def _finish(
    src: SourceItem, ctx: ImportContext, *, draft: _Draft | str, id_prefix: str, source_id: str,
    action_type: str, resource_type: str, account_id: str | None, region: str | None, savings: Any,
    tags: dict[str, str], details: dict[str, Any], created_at: Any = None,
) -> Recommendation | Skipped:
    def skip(reason: str) -> Skipped:
        return Skipped(source=src.source, action_type=action_type, resource_type=resource_type, reason=reason)

    if isinstance(draft, str):
        return skip(draft)
    account = account_id if account_id and _ACCOUNT.match(account_id) else ctx.account_id
    region = region if region and _REGION.match(region) else ctx.region
    if account is None:
        return skip("no 12-digit account id in the item")
    if region is None:
        return skip("no region in the item")
    if draft.resource_id is None:
        return skip("no resource id in the item")
    try:
        return Recommendation(
            id=recommendation_id(id_prefix, source_id), customer_id=ctx.customer_id, account_id=account,
            region=region, kind=draft.kind, resource_id=draft.resource_id,
            params={k: v for k, v in draft.params.items() if v is not None},
            estimated_monthly_savings=_savings(savings), tags=tags, source=src.source,
            source_id=source_id[:1024], source_details={k: v for k, v in details.items() if v is not None},
            created_at=_created_at(created_at),
        )
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        return skip(f"invalid {', '.join(fields)}")


Mapper = Callable[[SourceItem, ImportContext], "Recommendation | Skipped"]
_SHAPES: dict[str, Mapper] = {}


def shape(name: str) -> Callable[[Mapper], Mapper]:
    def register(fn: Mapper) -> Mapper:
        _SHAPES[name] = fn
        return fn
    return register


def shapes() -> list[str]:
    return sorted(_SHAPES)


def map_item(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    """The recommendation an item asks for, or why Reclaim cannot act on it (never an exception)."""
    mapper = _SHAPES.get(src.shape)
    if mapper is None:
        return Skipped(source=src.source, action_type="unknown", resource_type=src.shape,
                       reason=f"unknown item shape {src.shape!r}")
    return mapper(src, ctx)


def import_report(source: str, items: Iterable[SourceItem], ctx: ImportContext) -> ImportReport:
    return build_report(source, (map_item(item, ctx) for item in items))


def recommender_risk_floors(rec: Recommendation) -> list[tuple[RiskLevel, str]]:
    """The recommender's own risk inputs (Cost Optimization Hub's), each as the least risk it
    implies and why: a change AWS says cannot be rolled back is at least HIGH, one that needs
    a restart or more than low effort at least MEDIUM (HIGH for high effort)."""
    details = rec.source_details
    floors: list[tuple[RiskLevel, str]] = []
    if details.get("restartNeeded") is True:
        floors.append((RiskLevel.MEDIUM, f"{rec.source} says the change needs a restart"))
    if details.get("rollbackPossible") is False:
        floors.append((RiskLevel.HIGH, f"{rec.source} says the change cannot be rolled back"))
    effort = details.get("implementationEffort")
    if effort in ("Medium", "High", "VeryHigh"):
        floor = RiskLevel.MEDIUM if effort == "Medium" else RiskLevel.HIGH
        floors.append((floor, f"{rec.source} rates the implementation effort {effort}"))
    return floors


def source_risk_reasons(rec: Recommendation) -> list[str]:
    """Risk reasons from the recommender's own words (Cost Optimization Hub's risk inputs)."""
    return [reason for _, reason in recommender_risk_floors(rec)]


# ---- Cost Optimization Hub ------------------------------------------------------------------

CohBuilder = Callable[[dict[str, Any], dict[str, Any], str | None], "_Draft | str"]
"""(currentResourceDetails, recommendedResourceDetails, resource id) -> draft or the reason it cannot be."""

_COH: dict[tuple[str, str], CohBuilder] = {}


def _coh(action_type: str, *resource_types: str) -> Callable[[CohBuilder], CohBuilder]:
    def register(fn: CohBuilder) -> CohBuilder:
        for resource_type in resource_types:
            _COH[(action_type, resource_type)] = fn
        return fn
    return register


def coh_mappings() -> list[tuple[str, str]]:
    """(actionType, currentResourceType) pairs that map to a kind."""
    return sorted(_COH)


_NEEDS_DETAILS = "the item has no resource details (import live, or save get-recommendation's output)"


@_coh("Stop", "Ec2Instance")
def _coh_ec2_stop(current: dict[str, Any], _rec: dict[str, Any], rid: str | None) -> _Draft | str:
    return _Draft(kind="ec2.stop", resource_id=rid,
                  params={"expected_instance_type": _str(_get(current, "ec2Instance", "configuration", "instance",
                                                               "type"))})


@_coh("Rightsize", "Ec2Instance")
def _coh_ec2_rightsize(current: dict[str, Any], rec: dict[str, Any], rid: str | None) -> _Draft | str:
    path = ("ec2Instance", "configuration", "instance", "type")
    return _types_change("ec2.rightsize", rid, _str(_get(current, *path)), _str(_get(rec, *path)),
                         "expected_instance_type", "target_instance_type")


@_coh("Rightsize", "RdsDbInstance")
def _coh_rds_rightsize(current: dict[str, Any], rec: dict[str, Any], rid: str | None) -> _Draft | str:
    path = ("rdsDbInstance", "configuration", "instance", "dbInstanceClass")
    return _types_change("rds.rightsize", rid, _str(_get(current, *path)), _str(_get(rec, *path)),
                         "expected_instance_class", "target_instance_class")


@_coh("Stop", "RdsDbInstance")
def _coh_rds_stop(current: dict[str, Any], _rec: dict[str, Any], rid: str | None) -> _Draft | str:
    cls = _str(_get(current, "rdsDbInstance", "configuration", "instance", "dbInstanceClass"))
    return _Draft(kind="rds.stop", resource_id=rid, params={"expected_instance_class": cls} if cls else {})


@_coh("Delete", "EbsVolume")
def _coh_ebs_delete(current: dict[str, Any], _rec: dict[str, Any], rid: str | None) -> _Draft | str:
    storage = _get(current, "ebsVolume", "configuration", "storage") or {}
    size = _int(storage.get("sizeInGb"))
    return _Draft(kind="ebs.delete", resource_id=rid, params={
        "expected_size_gib": size if size and size > 0 else None, "expected_volume_type": _str(storage.get("type"))})


@_coh("Upgrade", "EbsVolume")
def _coh_ebs_gp3(current: dict[str, Any], rec: dict[str, Any], rid: str | None) -> _Draft | str:
    path = ("ebsVolume", "configuration", "storage", "type")
    before, after = _str(_get(current, *path)), _str(_get(rec, *path))
    if before is None or after is None:
        return _NEEDS_DETAILS
    if (before, after) != ("gp2", "gp3"):
        return f"volume type change {before} -> {after} (only gp2 -> gp3 is a kind)"
    performance = _get(rec, "ebsVolume", "configuration", "performance") or {}
    return _Draft(kind="ebs.gp2_to_gp3", resource_id=rid, params=_gp3_targets(
        _int(performance.get("iops")), _int(performance.get("throughput"))))


@_coh("Rightsize", "LambdaFunction")
def _coh_lambda(current: dict[str, Any], rec: dict[str, Any], rid: str | None) -> _Draft | str:
    path = ("lambdaFunction", "configuration", "compute", "memorySizeInMB")
    return _memory_change(rid, _int(_get(current, *path)), _int(_get(rec, *path)))


@_coh("Rightsize", "Ec2AutoScalingGroup")
@_coh("ScaleIn", "Ec2AutoScalingGroup")
def _coh_asg(current: dict[str, Any], rec: dict[str, Any], rid: str | None) -> _Draft | str:
    path = ("ec2AutoScalingGroup", "configuration", "instance", "type")
    before, after = _str(_get(current, *path)), _str(_get(rec, *path))
    if before is None or after is None:
        return "no current and recommended instance types (a capacity target is not in the hub's details)"
    return _types_change("asg.rightsize", rid, before, after, "expected_instance_type", "target_instance_type")


def _types_change(kind: str, rid: str | None, before: str | None, after: str | None,
                  expected: str, target: str) -> _Draft | str:
    if before is None or after is None:
        return _NEEDS_DETAILS
    if before == after:
        return f"recommended type is the current one ({before})"
    return _Draft(kind=kind, resource_id=rid, params={expected: before, target: after})


def _memory_change(rid: str | None, before: int | None, after: int | None) -> _Draft | str:
    if before is None or after is None:
        return _NEEDS_DETAILS
    if not (128 <= before <= 10240 and 128 <= after <= 10240):
        return f"memory outside 128-10240 MB ({before} -> {after})"
    if before == after:
        return f"recommended memory is the current one ({before} MB)"
    return _Draft(kind="lambda.memory", resource_id=rid,
                  params={"expected_memory_mb": before, "target_memory_mb": after})


def _gp3_targets(iops: int | None, throughput: int | None) -> dict[str, Any]:
    """gp3 targets the kind accepts (3000-16000 IOPS, 125-1000 MiB/s); outside: gp3's baseline."""
    params: dict[str, Any] = {}
    if iops is not None and 3000 <= iops <= 16000:
        params["target_iops"] = iops
    if throughput is not None and 125 <= throughput <= 1000:
        params["target_throughput"] = throughput
    return params


def _coh_resource_id(resource_type: str, item: dict[str, Any]) -> str | None:
    """The id Reclaim's kinds take: the hub's resourceId for EC2 and EBS, the name in the ARN otherwise
    (an RDS resourceId is the DbiResourceId, not the identifier)."""
    if resource_type in ("Ec2Instance", "EbsVolume"):
        return _str(item.get("resourceId")) or resource_name_from_arn(_str(item.get("resourceArn")))
    return resource_name_from_arn(_str(item.get("resourceArn"))) or _str(item.get("resourceId"))


@shape("coh")
def _map_coh(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    item = {**src.item, **{k: v for k, v in src.details.items() if v is not None}}
    action_type = _str(item.get("actionType")) or "unknown"
    resource_type = _str(item.get("currentResourceType")) or "unknown"
    builder = _COH.get((action_type, resource_type))
    rid = _coh_resource_id(resource_type, item)
    draft: _Draft | str
    if builder is None:
        draft = f"no Reclaim kind for {action_type} {resource_type} yet"
    else:
        draft = builder(item.get("currentResourceDetails") or {}, item.get("recommendedResourceDetails") or {}, rid)
    source_id = _str(item.get("recommendationId")) or f"{action_type}:{resource_type}:{rid}"
    return _finish(
        src, ctx, draft=draft, id_prefix="coh", source_id=source_id, action_type=action_type,
        resource_type=resource_type, account_id=_str(item.get("accountId")), region=_str(item.get("region")),
        savings=item.get("estimatedMonthlySavings"), tags=_tags(item.get("tags")),
        created_at=item.get("lastRefreshTimestamp"),
        details={key: item.get(key) for key in (
            "restartNeeded", "rollbackPossible", "implementationEffort", "currencyCode", "source",
            "recommendationLookbackPeriodInDays", "estimatedMonthlyCost")},
    )


# ---- Compute Optimizer ----------------------------------------------------------------------


def _best_option(options: Any) -> dict[str, Any]:
    """The option Compute Optimizer ranks first (rank 1), else the first listed."""
    listed = [o for o in options if isinstance(o, dict)] if isinstance(options, list) else []
    ranked = sorted(listed, key=lambda o: rank if isinstance(rank := o.get("rank"), int) else 1 << 30)
    return ranked[0] if ranked else {}


def _co_savings(option: dict[str, Any]) -> Any:
    """After discounts when Compute Optimizer gives it, else before."""
    after = _get(option, "savingsOpportunityAfterDiscounts", "estimatedMonthlySavings", "value")
    return after if after is not None else _get(option, "savingsOpportunity", "estimatedMonthlySavings", "value")


def _co_finish(src: SourceItem, ctx: ImportContext, *, arn: str | None, draft: _Draft | str, action_type: str,
               resource_type: str, savings: Any, details: dict[str, Any]) -> Recommendation | Skipped:
    region, account, _ = arn_parts(arn)
    item = src.item
    prefix = src.shape.replace(".", "-")
    return _finish(
        src, ctx, draft=draft, id_prefix=prefix,
        source_id=f"{src.shape}:{arn or resource_name_from_arn(arn)}", action_type=action_type,
        resource_type=resource_type, account_id=_str(item.get("accountId")) or account, region=region,
        savings=savings, tags=_tags(item.get("tags")), created_at=item.get("lastRefreshTimestamp"),
        details=details,
    )


@shape("co.ec2")
def _map_co_ec2(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    item = src.item
    arn = _str(item.get("instanceArn"))
    option = _best_option(item.get("recommendationOptions"))
    finding = _str(item.get("finding")) or "unknown"
    current, target = _str(item.get("currentInstanceType")), _str(option.get("instanceType"))
    draft: _Draft | str
    if finding != "Overprovisioned":
        draft = f"finding {finding} (only Overprovisioned instances are rightsized)"
    else:
        draft = _types_change("ec2.rightsize", resource_name_from_arn(arn), current, target,
                              "expected_instance_type", "target_instance_type")
    return _co_finish(src, ctx, arn=arn, draft=draft, action_type=f"Rightsize/{finding}",
                      resource_type="Ec2Instance", savings=_co_savings(option),
                      details={"finding": finding, "currentPerformanceRisk": item.get("currentPerformanceRisk"),
                               "performanceRisk": option.get("performanceRisk"),
                               "migrationEffort": option.get("migrationEffort")})


@shape("co.ebs")
def _map_co_ebs(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    item = src.item
    arn = _str(item.get("volumeArn"))
    option = _best_option(item.get("volumeRecommendationOptions"))
    finding = _str(item.get("finding")) or "unknown"
    before = _str(_get(item, "currentConfiguration", "volumeType"))
    after = _str(_get(option, "configuration", "volumeType"))
    draft: _Draft | str
    if finding != "NotOptimized":
        draft = f"finding {finding}"
    elif (before, after) != ("gp2", "gp3"):
        draft = f"volume type change {before} -> {after} (only gp2 -> gp3 is a kind)"
    else:
        draft = _Draft(kind="ebs.gp2_to_gp3", resource_id=resource_name_from_arn(arn), params=_gp3_targets(
            _int(_get(option, "configuration", "volumeBaselineIOPS")),
            _int(_get(option, "configuration", "volumeBaselineThroughput"))))
    return _co_finish(src, ctx, arn=arn, draft=draft, action_type=f"Upgrade/{finding}", resource_type="EbsVolume",
                      savings=_co_savings(option),
                      details={"finding": finding, "currentPerformanceRisk": item.get("currentPerformanceRisk")})


@shape("co.lambda")
def _map_co_lambda(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    item = src.item
    arn = _str(item.get("functionArn"))
    option = _best_option(item.get("memorySizeRecommendationOptions"))
    finding = _str(item.get("finding")) or "unknown"
    draft: _Draft | str
    if finding != "NotOptimized":
        draft = f"finding {finding}"
    else:
        draft = _memory_change(resource_name_from_arn(arn), _int(item.get("currentMemorySize")),
                               _int(option.get("memorySize")))
    return _co_finish(src, ctx, arn=arn, draft=draft, action_type=f"Rightsize/{finding}",
                      resource_type="LambdaFunction", savings=_co_savings(option),
                      details={"finding": finding, "findingReasonCodes": item.get("findingReasonCodes"),
                               "currentPerformanceRisk": item.get("currentPerformanceRisk")})


@shape("co.rds")
def _map_co_rds(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    item = src.item
    arn = _str(item.get("resourceArn"))
    option = _best_option(item.get("instanceRecommendationOptions"))
    finding = _str(item.get("instanceFinding")) or "unknown"
    draft: _Draft | str
    if finding != "Overprovisioned":
        draft = f"instance finding {finding} (only Overprovisioned instances are rightsized)"
    else:
        draft = _types_change("rds.rightsize", resource_name_from_arn(arn), _str(item.get("currentDBInstanceClass")),
                              _str(option.get("dbInstanceClass")), "expected_instance_class", "target_instance_class")
    return _co_finish(src, ctx, arn=arn, draft=draft, action_type=f"Rightsize/{finding}",
                      resource_type="RdsDbInstance", savings=_co_savings(option),
                      details={"finding": finding, "engine": item.get("engine"),
                               "currentPerformanceRisk": item.get("currentInstancePerformanceRisk")})


#: Idle resource type -> the kind that reclaims it (Compute Optimizer's GetIdleRecommendations).
_IDLE_KINDS = {"EC2Instance": "ec2.stop", "EBSVolume": "ebs.delete", "RDSDBInstance": "rds.stop"}


@shape("co.idle")
def _map_co_idle(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    item = src.item
    arn = _str(item.get("resourceArn"))
    resource_type = _str(item.get("resourceType")) or "unknown"
    finding = _str(item.get("finding")) or "unknown"
    kind = _IDLE_KINDS.get(resource_type)
    rid = _str(item.get("resourceId")) if resource_type != "RDSDBInstance" else None
    draft: _Draft | str = (f"no Reclaim kind for idle {resource_type} yet" if kind is None
                           else _Draft(kind=kind, resource_id=rid or resource_name_from_arn(arn)))
    return _co_finish(src, ctx, arn=arn, draft=draft, action_type=f"Idle/{finding}", resource_type=resource_type,
                      savings=_co_savings(item), details={"finding": finding,
                                                "lookBackPeriodInDays": item.get("lookBackPeriodInDays")})


@shape("co.error")
def _map_co_error(src: SourceItem, _ctx: ImportContext) -> Skipped:
    """A resource Compute Optimizer could not give a recommendation for (its `errors` list)."""
    item = src.item
    return Skipped(source=src.source, action_type=f"error/{_str(item.get('code')) or 'unknown'}",
                   resource_type=_str(item.get("resourceType")) or _str(item.get("operation")) or "unknown",
                   reason=(_str(item.get("message")) or "no message")[:300])


# ---- Trusted Advisor ------------------------------------------------------------------------

#: Cost-optimizing check id -> (kind, what the check is about). Check ids are stable; names are not.
TA_CHECKS: dict[str, tuple[str | None, str]] = {
    "Qch7DwouX1": ("ec2.stop", "Low Utilization Amazon EC2 Instances"),
    "Z4AUBRNSmz": ("eip.release", "Unassociated Elastic IP Addresses"),
    "DAvU99Dc4C": ("ebs.delete", "Underutilized Amazon EBS Volumes"),
    "Ti39halfu8": ("rds.stop", "Amazon RDS Idle DB Instances"),
    "hjLMh88uM8": (None, "Idle Load Balancers"),
}


def ta_check_id(check_arn: str | None) -> str | None:
    """`arn:aws:trustedadvisor:::check/Qch7DwouX1` -> `Qch7DwouX1`."""
    return check_arn.rsplit("/", 1)[1] if check_arn and "/" in check_arn else None


def _ta_money(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return float(value.replace("$", "").replace(",", "").strip())
    except ValueError:
        return None


def _ta_savings(resource: dict[str, Any], columns: dict[str, Any]) -> float | None:
    """The resource's "Estimated Monthly Savings" column (metadata keyed by column name or index)."""
    metadata = resource.get("metadata") if isinstance(resource.get("metadata"), dict) else {}
    for key, value in (metadata or {}).items():
        if "Estimated Monthly Savings" in (key, columns.get(key)):
            return _ta_money(value)
    return None


@shape("ta")
def _map_ta(src: SourceItem, ctx: ImportContext) -> Recommendation | Skipped:
    resource = src.item
    recommendation = src.details.get("recommendation") or {}
    check = src.details.get("check") or {}
    check_id = ta_check_id(_str(recommendation.get("checkArn")) or _str(check.get("arn"))) or "unknown"
    kind, about = TA_CHECKS.get(check_id, (None, _str(recommendation.get("name")) or check_id))
    rid = _str(resource.get("awsResourceId"))
    draft: _Draft | str
    if kind is None:
        draft = f"no Reclaim kind for {about} yet"
    elif kind == "eip.release" and not (rid or "").startswith("eipalloc-"):
        draft = "Trusted Advisor names the public IP, not the allocation id eip.release needs"
    else:
        draft = _Draft(kind=kind, resource_id=rid)
    _, account, _ = arn_parts(_str(recommendation.get("arn")) or _str(resource.get("recommendationArn")))
    _, resource_account, _ = arn_parts(_str(resource.get("arn")))
    columns = check.get("metadata") if isinstance(check.get("metadata"), dict) else {}
    return _finish(
        src, ctx, draft=draft, id_prefix=f"ta-{check_id}",
        source_id=_str(resource.get("arn")) or _str(resource.get("id")) or f"{check_id}:{rid}",
        action_type=check_id, resource_type=about, account_id=account or resource_account,
        region=_str(resource.get("regionCode")), savings=_ta_savings(resource, columns or {}), tags={},
        created_at=resource.get("lastUpdatedAt"),
        details={"check": about, "status": resource.get("status"), "lifecycleStage": recommendation.get(
            "lifecycleStage")},
    )


# ---- saved AWS CLI output -------------------------------------------------------------------

#: The list key of each saved output -> (source, shape). Compute Optimizer's get-*-recommendations
#: and Cost Optimization Hub's list-recommendations, as `aws ... > file.json` writes them.
CLI_LISTS: dict[str, tuple[str, str]] = {
    "items": (COH, "coh"),
    "instanceRecommendations": (COMPUTE_OPTIMIZER, "co.ec2"),
    "volumeRecommendations": (COMPUTE_OPTIMIZER, "co.ebs"),
    "lambdaFunctionRecommendations": (COMPUTE_OPTIMIZER, "co.lambda"),
    "rdsDBRecommendations": (COMPUTE_OPTIMIZER, "co.rds"),
    "idleRecommendations": (COMPUTE_OPTIMIZER, "co.idle"),
}


class UnknownOutput(ValueError):
    """The JSON is none of the outputs Reclaim reads."""


def items_from_cli_output(data: Any) -> tuple[str, list[SourceItem]]:
    """(source, items) of a saved AWS CLI output, recognised by its shape.

    One of `CLI_LISTS`' outputs; or `aws cost-optimization-hub get-recommendation`'s answer (one
    object with `recommendationId` and the resource details), alone or in a list.
    """
    if isinstance(data, dict) and "recommendationId" in data:
        data = [data]
    if isinstance(data, list):
        if not data or not all(isinstance(e, dict) and "recommendationId" in e for e in data):
            raise UnknownOutput("a list, but not of Cost Optimization Hub recommendations")
        return COH, [SourceItem(source=COH, shape="coh", item=e) for e in data]
    if not isinstance(data, dict):
        raise UnknownOutput("not a JSON object or list")
    found = [key for key in CLI_LISTS if isinstance(data.get(key), list)]
    if len(found) != 1:
        raise UnknownOutput(
            "not the output of aws cost-optimization-hub list-recommendations / get-recommendation or "
            "aws compute-optimizer get-{ec2-instance,ebs-volume,lambda-function,rds-database,idle}-recommendations")
    source, shape_name = CLI_LISTS[found[0]]
    return source, [SourceItem(source=source, shape=shape_name, item=e) for e in data[found[0]] if isinstance(e, dict)]
