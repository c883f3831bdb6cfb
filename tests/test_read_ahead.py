"""A plan's next items read ahead by the validation before them (domain.plan.read_ahead,
activities/gateway/coalesce.validating): one describe answers many executions' validations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activities.aws import SessionFactory
from activities.faults import FaultInjector
from domain.execution import READ_AHEAD_MAX
from domain.plan import PlanItem, PlanSpec, PlanStatus, read_ahead
from domain.recommendation import Recommendation
from domain.status import ExecutionStatus as S
from starter.plans import Plans
from tests.conftest import ACCOUNT, REGION, AwsAccount, Stack

KINDS = ("ec2.stop", "ebs.delete")
ACCOUNTS = (ACCOUNT, "210987654321")
REGIONS = ("us-east-1", "eu-west-1")


def _item(position: int, kind: str, account: str, region: str, resource: str) -> PlanItem:
    return PlanItem(position=position, wave=0, recommendation=Recommendation(
        id=f"rec-{position}", customer_id="acme", account_id=account, region=region, kind=kind,
        resource_id=resource, estimated_monthly_savings=1.0))


items = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(ACCOUNTS), st.sampled_from(REGIONS),
                           st.sampled_from([f"r-{i}" for i in range(40)])), min_size=1, max_size=80)


@given(items, st.integers(min_value=0, max_value=30))
def test_read_ahead_names_the_next_items_of_the_same_kind_account_and_region_once_each(
    rows: list[tuple[str, str, str, str]], limit: int
) -> None:
    plan = [_item(i, *row) for i, row in enumerate(rows)]
    first, following = plan[0], plan[1:]
    ahead = read_ahead(first, following, limit)
    rec = first.recommendation
    assert rec is not None
    alike = [p.recommendation.resource_id for p in following if p.recommendation is not None
             and (p.recommendation.kind, p.recommendation.account_id, p.recommendation.region)
             == (rec.kind, rec.account_id, rec.region) and p.recommendation.resource_id != rec.resource_id]
    assert ahead == list(dict.fromkeys(alike))[:limit]  # in start order, each once, never itself
    assert len(ahead) <= limit


@pytest.fixture
def sessions(moto_endpoint: str, faults: FaultInjector) -> SessionFactory:
    """Validation may take an answer of any age from a call sent after its execution began, so
    that how far apart a loaded machine runs the validations does not matter here; a 1 ms window
    so that coalescing alone merges little."""
    return SessionFactory(endpoint_url=moto_endpoint, session_hooks=[faults.install], coalesce_window=0.001,
                          validate_read_age=600)


async def test_a_plans_validations_share_describes_read_ahead_and_change_nothing(
    stack: Stack, aws: AwsAccount, faults: FaultInjector
) -> None:
    """A dry run of 24 stops started together: each validation's describe carries the plan's next
    instances, so most validations make no call of their own; every item still sees its own
    instance (one is gone, one is production) and nothing changes.

    Which validations still ask: those that run before every item ahead of them in the plan (none
    has read them ahead yet), about ln(24) + 0.6 = 3.8 if the worker ran them in random order, fewer
    in the order they start; 8 is beyond three standard deviations of the random order. Without
    the read-ahead they asked 13 and 14 times in two runs here (a 1 ms window merges few)."""
    instances = [aws.instance("m5.large") for _ in range(22)]
    production = aws.instance("m5.large", tags={"env": "production"})
    gone = "i-0000000000000dead"
    resources = [*instances[:5], gone, production, *instances[5:]]
    recs = [Recommendation(id=f"rec-ahead-{i}", customer_id="acme", account_id=ACCOUNT, region=REGION,
                           kind="ec2.stop", resource_id=r, params={"expected_instance_type": "m5.large"},
                           estimated_monthly_savings=10.0) for i, r in enumerate(resources)]
    spec = PlanSpec.model_validate({
        "recommendations": [r.model_dump(mode="json") for r in recs], "strategy": "parallel", "dry_run": True,
        "rate": {"max_concurrency": len(recs)},
        "options": {"step_timeout": timedelta(seconds=20), "rollback_window": timedelta(0)}})
    plans = Plans(stack.client, stack.task_queue, stack.store)
    plan_id = (await plans.submit(spec, requested_by="alice")).plan_id
    dry = await plans.wait(plan_id, timeout=120)
    assert dry.status is PlanStatus.AWAITING_APPROVAL, dry.reason
    assert dry.counts == {S.PLANNED.value: 22, "REFUSED": 2}
    report = {line.recommendation_id: line for line in (await plans.report(plan_id)).items}
    assert "does not exist" in (report[recs[5].id].reason or "") or "not found" in (report[recs[5].id].reason or "")
    assert "production" in (report[recs[6].id].reason or "")
    assert all(aws.instance_state(i)[0] == "running" for i in [*instances, production])
    ledger = stack.sessions.ledger
    asked = ledger.asked[("validate", "describe_instances")]
    assert asked == len(recs)
    assert faults.calls.get("DescribeInstances", 0) <= len(recs) // 3, faults.calls
    assert faults.calls["GetCallerIdentity"] == 1  # the account checked once, the others waiting for it
    assert len(recs) <= READ_AHEAD_MAX  # one validation's call could carry the whole plan
