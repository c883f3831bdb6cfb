"""What the action-kind tests (tests/test_actions*.py) share: a moto account in-process, an Action
built from a Recommendation, Temporal's InProgress retry without the backoff, and AWS tag shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import boto3
import pytest
from moto import mock_aws

from activities.actions.base import Action, action_class
from activities.aws import SessionFactory
from activities.errors import InProgress
from domain.recommendation import Recommendation

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
T = TypeVar("T")


@contextmanager
def moto_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in-process for one test: test credentials, no endpoint or profile that could reach
    a real or shared account, and no default AMIs (thousands of AMI snapshots otherwise)."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def moto_ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Fixture: a moto_account and the operator's EC2 client in it (bound as `ec2` by the EC2 tests)."""
    with moto_account(monkeypatch):
        yield boto3.client("ec2", region_name=REGION)


def build_action(sessions: SessionFactory, kind: str, resource_id: str, params: dict[str, Any] | None = None,
                 *, execution_id: str, savings: float = 10.0, rec_id: str = "rec-1") -> Action[Any]:
    """The kind's Action for a Recommendation on `resource_id` in ACCOUNT/REGION, run by `execution_id`."""
    rec = Recommendation(id=rec_id, customer_id="acme", account_id=ACCOUNT, region=REGION, kind=kind,
                         resource_id=resource_id, params=params or {}, estimated_monthly_savings=savings)
    return action_class(kind)(sessions, rec, execution_id)


def converge(fn: Callable[..., T], *args: Any, attempts: int = 10) -> T:
    """What Temporal's retry policy does for InProgress, minus the backoff."""
    for _ in range(attempts):
        try:
            return fn(*args)
        except InProgress:
            continue
    raise AssertionError(f"{fn.__name__} still in progress after {attempts} attempts")


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """{"k": "v"} as AWS takes tags: [{"Key": "k", "Value": "v"}]."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_dict(items: list[dict[str, str]] | None) -> dict[str, str]:
    """AWS's [{"Key": "k", "Value": "v"}] (or None: no tags) as {"k": "v"}."""
    return {t["Key"]: t["Value"] for t in items or []}

