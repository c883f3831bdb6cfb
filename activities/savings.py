"""`measure_savings`: a completed change's monthly savings, measured after the fact, and recorded.

Cost Explorer first: `GetCostAndUsage` filtered on the resource (`RESOURCE_ID`) and the
account, daily, for a window before the change and the same window at the end of the
period. AWS answers `RESOURCE_ID` with resource-level data only (opt-in, the last 14 days,
`GetCostAndUsageWithResources`), so a plain call it refuses (ValidationException) is asked
again that way. No cost rows on either side (not opted in, older than 14 days), access
denied or data unavailable: the price table measures instead, from the resource as it was
before the change and as it is now, described through the same SessionFactory as the kinds.

One activity measures and writes the measurement (an upsert by execution id): a retry after
a failed write asks Cost Explorer again (each request costs $0.01), never records twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity

from activities.actions.base import UnknownAction, action_class
from activities.aws import SessionFactory
from activities.errors import client_error_code, to_application_error
from activities.store_errors import store_call
from domain.execution import Observation
from domain.savings import (
    DailyCost,
    MeasureInput,
    MeasureMethod,
    SavingsCheckInput,
    SavingsMeasurement,
    Window,
    daily_costs,
    days_per_month,
    mean_daily,
    price_table_measure,
    resource_filter,
    windows,
)
from store.repository import Store

#: Cost Explorer's API lives in us-east-1 (the commercial partition's one endpoint).
CE_REGION = "us-east-1"
#: Answers that mean "no resource-level cost to read here": the price table measures instead.
NO_COST_DATA = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "DataUnavailableException",
                          "ValidationException", "BillExpirationException", "OptInRequired",
                          "ResourceNotFoundException", "BillingViewHealthStatusException"})


class NoCostData(Exception):
    """Cost Explorer cannot say what the resource cost on one side of the change; the reason."""


class SavingsActivities:
    def __init__(self, sessions: SessionFactory, store: Store) -> None:
        self.sessions = sessions
        self.store = store

    @activity.defn(name="measure_savings")
    @store_call
    async def measure_savings(self, request: MeasureInput) -> SavingsMeasurement:
        try:
            measurement = await asyncio.to_thread(self.measure, request)
        except Exception as exc:  # translated by AWS code, never swallowed
            translated = to_application_error(exc)
            if translated is exc:
                raise
            raise translated from exc
        await self.store.measurements.record(measurement)
        return measurement

    def measure(self, request: MeasureInput) -> SavingsMeasurement:
        """Cost Explorer, else the price table (blocking: boto3)."""
        check = request.check
        evidence: list[str] = []
        measured: float | None
        try:
            measured, found = self._from_cost_explorer(request)
            method = MeasureMethod.COST_EXPLORER
            evidence += found
        except NoCostData as why:
            evidence.append(f"Cost Explorer: {why}; measured from the price table instead")
            measured, found = self._from_price_table(check)
            method = MeasureMethod.PRICE_TABLE
            evidence += found
        return SavingsMeasurement(
            execution_id=check.execution_id, customer_id=check.customer_id, account_id=check.account_id,
            region=check.region, kind=check.kind, resource_id=check.resource_id,
            estimated_monthly_savings=check.estimated_monthly_savings,
            verified_monthly_savings=check.verified_monthly_savings, measured_monthly_savings=measured,
            method=method, evidence=evidence, period_start=request.period_start, period_end=request.period_end,
        )

    # -- Cost Explorer ------------------------------------------------------------------------

    def _from_cost_explorer(self, request: MeasureInput) -> tuple[float, list[str]]:
        check = request.check
        sides = windows(request.period_start, request.period_end, check.window)
        if sides is None:
            raise NoCostData(f"the period is shorter than a {check.window.days}-day window after the change")
        ce = self.sessions.client(check.account_id, CE_REGION, "ce")
        before, after = (self._daily(ce, check, side) for side in sides)
        for side, days in zip(sides, (before, after), strict=True):
            if not days:
                raise NoCostData(f"no resource-level cost of {check.resource_id} for {side} "
                                 "(resource-level data is opt-in and reaches back 14 days)")
        if not any(d.amount for d in before):
            raise NoCostData(f"{check.resource_id} cost nothing in {sides[0]}, before the change")
        per_month = days_per_month()
        was, now = mean_daily(before) * per_month, mean_daily(after) * per_month
        estimated = " (some days still estimated by AWS)" if any(d.estimated for d in [*before, *after]) else ""
        return round(was - now, 2), [
            f"Cost Explorer, {check.resource_id} per day: ${mean_daily(before):,.4f} in {sides[0]} "
            f"({len(before)} days) before the change, ${mean_daily(after):,.4f} in {sides[1]} "
            f"({len(after)} days) at the end of the period{estimated}",
            f"monthly: ${was:,.2f} before, ${now:,.2f} after ({per_month:.2f} days a month)",
        ]

    def _daily(self, ce: Any, check: SavingsCheckInput, window: Window) -> list[DailyCost]:
        query = {"TimePeriod": window.period(), "Granularity": "DAILY", "Metrics": ["UnblendedCost"],
                 "Filter": resource_filter(check.resource_id, check.account_id)}
        try:
            return self._pages(ce.get_cost_and_usage, query, check.resource_id)
        except ClientError as exc:
            if client_error_code(exc) != "ValidationException":
                _no_cost_data(exc)
                raise
        try:  # AWS keeps RESOURCE_ID for its resource-level call
            return self._pages(ce.get_cost_and_usage_with_resources, query, check.resource_id)
        except ClientError as exc:
            _no_cost_data(exc)
            raise

    @staticmethod
    def _pages(call: Callable[..., Any], query: dict[str, Any], resource_id: str) -> list[DailyCost]:
        days: list[DailyCost] = []
        token: str | None = None
        while True:
            answer = call(**query, **({"NextPageToken": token} if token else {}))
            days += daily_costs(answer.get("ResultsByTime") or [], resource_id)
            token = answer.get("NextPageToken")
            if not token:
                return days

    # -- the price table ----------------------------------------------------------------------

    def _from_price_table(self, check: SavingsCheckInput) -> tuple[float | None, list[str]]:
        try:
            kind = action_class(check.kind)
        except UnknownAction:
            return None, [f"unknown kind {check.kind}: nothing to describe the resource with"]
        clients = lambda service: self.sessions.client(check.account_id, check.region, service)  # noqa: E731
        try:
            found = kind.resource.describe(clients, check.resource_id)
        except ClientError as exc:
            if client_error_code(exc) not in NO_COST_DATA:
                raise
            return None, [f"cannot describe {check.resource_id} now: {client_error_code(exc)}"]
        now = None if found is None else Observation(state=found[0].model_dump(mode="json"), tags=found[1])
        return price_table_measure(check, kind.resource.cfn_type, now, kind.volatile_state)


def _no_cost_data(exc: ClientError) -> None:
    """Raise NoCostData for an answer that means Cost Explorer cannot tell (else return)."""
    code = client_error_code(exc)
    if code in NO_COST_DATA:
        raise NoCostData(f"{code} ({exc.response.get('Error', {}).get('Message', '')})".replace(" ()", "")) from None
