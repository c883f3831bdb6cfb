"""Telling people from a workflow: route by the worker's rules, then deliver per channel.

Shared by the execution's Notifier, the rollback alarm and the plan. Which channels is asked
by an activity on the worker (the notify file lives there): a local one for executions and the
alarm (`tell`), an ordinary one on the records queue for a plan (`tell_durably`: a plan runs
no local activity, whose marker could move a lazily asked patch marker into another workflow
task). Each delivery is an activity on the records queue, so a wedged channel never takes a
slot AWS work needs. Neither raises: a channel that refuses or is down fails its own delivery,
visible in the history, after a bounded number of tries.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.notify.delivery import NotifyActivities
    from activities.records import records_task_queue
    from domain.notifications import DeliveryInput, Notification, Routing
    from workflows.options import (
        DELIVERY_DEADLINE,
        DELIVERY_RETRY,
        DELIVERY_TIMEOUT,
        ONE_ATTEMPT,
        ROUTE_TIMEOUT,
    )


async def tell(notification: Notification) -> None:
    try:
        routing: Routing = await workflow.execute_local_activity_method(
            NotifyActivities.route, notification, schedule_to_close_timeout=ROUTE_TIMEOUT,
            retry_policy=ONE_ATTEMPT,
        )
    except FailureError:
        return  # no rules answered: nobody to tell (the worker logs why)
    await _deliver(notification, routing)


async def tell_durably(notification: Notification) -> None:
    """`tell` with the routing asked by an ordinary activity on the records queue (retried a bounded time)."""
    try:
        routing: Routing = await workflow.execute_activity_method(
            NotifyActivities.route, notification, task_queue=records_task_queue(workflow.info().task_queue),
            start_to_close_timeout=ROUTE_TIMEOUT, schedule_to_close_timeout=DELIVERY_DEADLINE,
            retry_policy=DELIVERY_RETRY,
        )
    except FailureError:
        return  # no worker routed it in time: nobody to tell (its history says why)
    await _deliver(notification, routing)


async def _deliver(notification: Notification, routing: Routing) -> None:
    queue = records_task_queue(workflow.info().task_queue)
    deliveries = [
        workflow.execute_activity_method(
            NotifyActivities.deliver, DeliveryInput(notification=notification, channel=channel), task_queue=queue,
            start_to_close_timeout=DELIVERY_TIMEOUT, schedule_to_close_timeout=DELIVERY_DEADLINE,
            retry_policy=DELIVERY_RETRY,
        )
        for channel in routing.channels
    ]
    await asyncio.gather(*deliveries, return_exceptions=True)
