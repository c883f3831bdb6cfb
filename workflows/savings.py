"""Savings checked: a while after a completed change, measure what it saves and record it.

Started by the execution when its change completes, as a child abandoned to outlive it
(the execution closes when its rollback window ends; this waits 30 days by default). Its
id is `savings-<execution id>`, so there is one per execution however often it is asked
for. It sleeps until `changed_at + after`, then runs one activity, `measure_savings`
(Cost Explorer, else the price table; activities/savings.py), which writes the
measurement to the read model; the measurement is also the workflow's result.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.savings import SavingsActivities
    from domain.savings import MeasureInput, SavingsCheckInput, SavingsMeasurement
    from workflows.options import READ_RETRY

#: A measurement reads AWS and writes the store: retried through a store restart or an AWS
#: outage for a day (the figure is a month old anyway), an attempt at most 5 minutes.
MEASURE_TIMEOUT = timedelta(minutes=5)
MEASURE_DEADLINE = timedelta(days=1)
MEASURE_RETRY = RetryPolicy(
    initial_interval=READ_RETRY.initial_interval, backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5), non_retryable_error_types=READ_RETRY.non_retryable_error_types,
)


def savings_check_id(execution_id: str) -> str:
    return f"savings-{execution_id}"


@workflow.defn(name="SavingsCheck", sandboxed=False)
class SavingsCheckWorkflow:
    """Outside the workflow sandbox, as `ResourceLease` (workflows/lease.py): one per completed
    execution, a timer and one activity, time only from `workflow.now()`."""

    def __init__(self) -> None:
        self._measurement: SavingsMeasurement | None = None

    @workflow.run
    async def run(self, check: SavingsCheckInput) -> SavingsMeasurement:
        start = check.changed_at or workflow.now()
        remaining = start + check.after - workflow.now()
        if remaining > timedelta(0):
            await workflow.sleep(remaining)
        self._measurement = await workflow.execute_activity_method(
            SavingsActivities.measure_savings,
            MeasureInput(check=check, period_start=start, period_end=workflow.now()),
            start_to_close_timeout=MEASURE_TIMEOUT, schedule_to_close_timeout=MEASURE_DEADLINE,
            retry_policy=MEASURE_RETRY,
        )
        return self._measurement

    @workflow.query(name="measurement")
    def measurement(self) -> SavingsMeasurement | None:
        """The measurement once taken; None while waiting."""
        return self._measurement
