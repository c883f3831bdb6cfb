"""domain/scan.py, pure: ages judged on the injected clock, idleness on every day of the look-back,
protection before anything is recommended, savings never negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.policy import Policy
from domain.recommendation import Recommendation
from domain.scan import (
    Daily,
    Finding,
    InstanceSeen,
    NoData,
    Protected,
    SnapshotSeen,
    Thresholds,
    VolumeSeen,
    decide,
    judge_instance,
    judge_snapshot,
    judge_volume,
    smaller_db_class,
)
from domain.sources import ImportContext

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REGION = "us-east-1"
CTX = ImportContext(customer_id="acme", account_id="123456789012", region=REGION)
KINDS = ["ebs.delete", "ebs.gp2_to_gp3", "ec2.stop", "ebs.snapshot_delete"]


@given(age_days=st.floats(0, 400), min_age=st.integers(0, 365), volume_type=st.sampled_from(["gp2", "gp3", "io1"]),
       size=st.integers(1, 16000))
def test_an_unattached_volume_is_deleted_only_once_old_enough(age_days: float, min_age: int, volume_type: str,
                                                              size: int) -> None:
    volume = VolumeSeen(resource_id="vol-1", volume_type=volume_type, size_gib=size, attached=False, created_at=T0)
    found = judge_volume(volume, Thresholds(volume_min_age_days=min_age), REGION, T0 + timedelta(days=age_days))
    if age_days >= min_age:
        assert isinstance(found, Finding) and found.kind == "ebs.delete" and found.monthly_savings >= 0
    elif volume_type == "gp2":
        assert isinstance(found, Finding) and found.kind == "ebs.gp2_to_gp3"
    else:
        assert found is None


@given(age_days=st.floats(0, 400), min_age=st.integers(0, 365), used=st.booleans())
def test_a_snapshot_is_waste_only_old_and_unused(age_days: float, min_age: int, used: bool) -> None:
    snap = SnapshotSeen(resource_id="snap-1", volume_size_gib=8, started_at=T0, used_by_images=["ami-1"] if used else [])
    found = judge_snapshot(snap, Thresholds(snapshot_min_age_days=min_age), REGION, T0 + timedelta(days=age_days))
    assert (found is not None) == (not used and age_days >= min_age)


day_values = st.lists(st.floats(0, 100), min_size=0, max_size=14)


@given(cpu=day_values, net_mib=day_values, idle=st.floats(0, 50))
def test_an_instance_is_idle_only_when_every_day_is(cpu: list[float], net_mib: list[float], idle: float) -> None:
    t = Thresholds(cpu_idle_percent=idle, network_idle_mib_per_day=idle)
    seen = InstanceSeen(resource_id="i-1", instance_type="m5.large", running=True, cpu=Daily(values=cpu),
                        network_in=Daily(values=[v * 1024**2 for v in net_mib]), network_out=Daily(values=[0] * 14))
    found = judge_instance(seen, t, REGION, T0)
    days = min(len(cpu), len(net_mib))
    if len(cpu) < 7 or days < 7:
        assert isinstance(found, NoData)
    elif all(v <= idle for v in cpu) and all(v <= idle + 1e-9 for v in net_mib[:days]):
        assert isinstance(found, Finding) and found.evidence["cpu_daily_average_percent"]["days"] == len(cpu)
    else:
        assert found is None


@given(key=st.sampled_from(["reclaim:protect", "Reclaim:Protect", "env", "Stage", "team"]),
       value=st.sampled_from(["true", "yes", "prod", "production-eu", "dev", "false"]))
def test_protected_and_production_findings_are_never_recommended(key: str, value: str) -> None:
    finding = Finding(resource_type="Ec2Instance", resource_id="i-0123456789abcdef0", finding="idle instance",
                      kind="ec2.stop", monthly_savings=70.0, evidence={}, tags={key: value})
    decided = decide(finding, CTX, Policy(), KINDS, Thresholds())
    protected = (key.lower() == "reclaim:protect" and value != "false") or (
        key.lower() in ("env", "stage") and value.startswith("prod"))
    assert isinstance(decided, Protected) == protected
    if not protected:
        assert isinstance(decided, Recommendation) and decided.source_details["finding"] == "idle instance"


def test_a_finding_without_a_kind_is_counted_not_dropped() -> None:
    finding = Finding(resource_type="RdsDbInstance", resource_id="db1", finding="oversized DB instance", kind=None,
                      monthly_savings=0.0, evidence={}, not_executable="no smaller class of db.m5.large")
    decided = decide(finding, CTX, Policy(), KINDS, Thresholds())
    assert not isinstance(decided, Recommendation | Protected)
    assert decided.reason == "found, not executable yet: no smaller class of db.m5.large"
    assert smaller_db_class("db.m5.xlarge") == "db.m5.large" and smaller_db_class("db.m5.large") is None
