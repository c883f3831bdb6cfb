"""domain/notifications.py: the notification's shape and routing, property-tested."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.notifications import (
    SEVERITY_ORDER,
    Notification,
    NotificationEvent,
    NotifyFile,
    QuietHours,
    Rule,
    Severity,
    route,
)
from domain.policy import RiskLevel

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

notifications = st.builds(
    Notification,
    event=st.sampled_from(NotificationEvent),
    subject_id=st.text("abc-123", min_size=1, max_size=12),
    sequence=st.integers(0, 5),
    at=st.just(T0),
    customer_id=st.sampled_from([None, "acme", "globex"]),
    account_id=st.sampled_from([None, "111111111111", "222222222222"]),
    kind=st.sampled_from([None, "ec2.stop", "ebs.delete"]),
    risk=st.sampled_from([None, *RiskLevel]),
)
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC))
zones = st.sampled_from(["UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham"])
quiet = st.builds(QuietHours, start=st.times(), end=st.times(), timezone=zones)
rules = st.builds(
    Rule,
    channels=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
    customers=st.lists(st.sampled_from(["acme", "globex"]), max_size=2),
    accounts=st.lists(st.sampled_from(["111111111111", "222222222222"]), max_size=1),
    kinds=st.lists(st.sampled_from(["ec2.stop", "ebs.delete"]), max_size=1),
    events=st.lists(st.sampled_from(NotificationEvent), max_size=3),
    min_severity=st.sampled_from([None, *Severity]),
    min_risk=st.sampled_from([None, *RiskLevel]),
    quiet_hours=st.none() | quiet,
)


@given(notifications, moments)
def test_a_rule_without_filters_matches_everything(n: Notification, now: datetime) -> None:
    assert route(n, [Rule(channels=["ops"])], now) == ["ops"]


@given(notifications, st.lists(rules, max_size=4), moments)
def test_quiet_hours_never_drop_a_critical_alarm(n: Notification, rs: list[Rule], now: datetime) -> None:
    alarm = n.model_copy(update={"severity": Severity.CRITICAL})
    unquiet = [r.model_copy(update={"quiet_hours": None}) for r in rs]
    assert route(alarm, rs, now) == route(alarm, unquiet, now)


@given(notifications, st.lists(rules, max_size=4), moments)
def test_routing_picks_each_channel_once_and_only_from_matching_rules(
    n: Notification, rs: list[Rule], now: datetime,
) -> None:
    chosen = route(n, rs, now)
    assert len(chosen) == len(set(chosen))
    allowed = {c for r in rs if r.matches(n) for c in r.channels}
    assert set(chosen) <= allowed
    # without quiet hours, routing is exactly the matching rules' channels
    assert set(route(n, [r.model_copy(update={"quiet_hours": None}) for r in rs], now)) == allowed


@given(notifications, st.sampled_from(Severity), moments)
def test_min_severity_is_a_threshold(n: Notification, floor: Severity, now: datetime) -> None:
    sent = route(n, [Rule(channels=["x"], min_severity=floor)], now) == ["x"]
    assert sent == (SEVERITY_ORDER.index(n.severity) >= SEVERITY_ORDER.index(floor))


@given(quiet, moments)
def test_quiet_hours_are_local_time(q: QuietHours, now: datetime) -> None:
    local = now.astimezone(__import__("zoneinfo").ZoneInfo(q.timezone)).time()
    if q.start == q.end:
        assert not q.covers(now)
    elif q.start < q.end:
        assert q.covers(now) == (q.start <= local.replace(tzinfo=None) < q.end)
    else:
        assert q.covers(now) == (not q.end <= local.replace(tzinfo=None) < q.start)


def test_quiet_hours_wrap_midnight_in_their_zone() -> None:
    night = QuietHours(start=time(22), end=time(7), timezone="Europe/Paris")
    assert night.covers(datetime(2026, 12, 5, 22, 30, tzinfo=UTC))  # 23:30 in Paris
    assert not night.covers(datetime(2026, 12, 5, 6, 30, tzinfo=UTC))  # 07:30 in Paris
    rule = Rule(channels=["pager"], quiet_hours=night)
    late = datetime(2026, 12, 5, 23, 0, tzinfo=UTC)
    info = Notification(event="completed", subject_id="exec-1", at=late)
    alarm = Notification(event="rollback_failed", subject_id="exec-1", at=late)
    assert route(info, [rule], late) == []
    assert alarm.severity is Severity.CRITICAL
    assert route(alarm, [rule], late) == ["pager"]


def test_filters_customer_account_kind_event_and_risk() -> None:
    n = Notification(event="approval_requested", subject_id="exec-r", at=T0, customer_id="acme",
                     account_id="111111111111", kind="ebs.delete", risk="HIGH")
    assert route(n, [Rule(channels=["a"], customers=["globex"])], T0) == []
    assert route(n, [Rule(channels=["a"], customers=["acme"], accounts=["111111111111"], kinds=["ebs.delete"],
                          events=["approval_requested"], min_risk="MEDIUM")], T0) == ["a"]
    assert route(n, [Rule(channels=["a"], min_risk="CRITICAL")], T0) == []
    plan = Notification(event="plan_finished", subject="plan", subject_id="plan-1", at=T0)
    assert route(plan, [Rule(channels=["a"], min_risk="LOW")], T0) == []  # no risk: a risk floor does not match


def test_dedup_key_and_default_severity() -> None:
    n = Notification(event="approval_reminder", subject_id="exec-9", sequence=2, at=T0)
    assert n.dedup_key == "exec-9:approval_reminder:2"
    assert n.severity is Severity.INFO
    assert Notification(event="failed", subject_id="x", at=T0).severity is Severity.ERROR
    assert Notification(event="failed", subject_id="x", at=T0, severity="critical").severity is Severity.CRITICAL
    # round trip through JSON (a workflow history): the dedup key is a property, not a field
    assert Notification.model_validate_json(n.model_dump_json()) == n


def test_the_file_model_refuses_inline_secrets_and_unknown_channels() -> None:
    with pytest.raises(ValidationError, match="inline secrets are refused"):
        NotifyFile.model_validate({"channels": {"s": {"type": "slack",
                                                      "webhook_url": "https://hooks.slack.com/services/T/B/x"}}})
    with pytest.raises(ValidationError, match="looks like a secret"):
        NotifyFile.model_validate({"channels": {"w": {"type": "webhook", "secret": "env:S",
                                                      "url": "https://hooks.slack.com/services/T/B/x"}}})
    f = NotifyFile.model_validate({"channels": {"w": {"type": "webhook", "url": "http://h/", "secret": "env:S"}},
                                   "rules": [{"channels": ["w", "nope"]}]})
    assert f.problems() == [(("rules", 0, "channels", 1), "unknown channel 'nope'; channels: w")]
    with pytest.raises(ValidationError):
        QuietHours(start=time(1), end=time(2), timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="aware"):
        QuietHours(start=time(1), end=time(2)).covers(datetime(2026, 1, 1) + timedelta(0))
