"""How long and how often both workflows retry and wait: one place, so a policy is tuned once.

Reads retry until a deadline, not a count: a throttling streak or a database
restart outlasts any small number of attempts, and a read changes nothing
however often it runs. Mutations back off longer (AWS's mutating buckets refill
at 5/s). Errors that retrying cannot heal are named in `NON_RETRYABLE_TYPES`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.errors import NON_RETRYABLE_TYPES

READ_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
READ_DEADLINE = timedelta(minutes=10)
MUTATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
MUTATE_DEADLINE = timedelta(minutes=30)
#: The heartbeat timeout of an apply whose kind declares a longer deadline (`apply_deadline`): a
#: lost worker is noticed within this, not a step timeout later.
APPLY_HEARTBEAT = timedelta(minutes=2)
VERIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=15),
    non_retryable_error_types=NON_RETRYABLE_TYPES,
)
REVERT_DEADLINE = timedelta(hours=6)
#: Store writes: retried until they land (the database may be restarting).
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
RECORD_TIMEOUT = timedelta(seconds=30)
#: A plan's store activities (its rows, its report) move more data than one view.
STORE_TIMEOUT = timedelta(minutes=2)
#: A read-model write as a local activity: one attempt, then the durable way.
LOCAL_RECORD_TIMEOUT = timedelta(seconds=5)
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
#: A rollback that waits for a busy resource asks again after these, doubling in between.
LEASE_RETRY_FIRST = timedelta(seconds=5)
LEASE_RETRY_MAX = timedelta(minutes=5)
#: Notifications: which channels (a local activity reading the worker's rules), then each
#: delivery retried for a bounded time: a dead channel never holds an execution's close for long.
ROUTE_TIMEOUT = timedelta(seconds=10)
DELIVERY_TIMEOUT = timedelta(seconds=30)
DELIVERY_DEADLINE = timedelta(minutes=2)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    non_retryable_error_types=["ChannelRejected", "ChannelMisconfigured"],
)
