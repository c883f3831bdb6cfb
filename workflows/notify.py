"""Telling people from a workflow: route by the worker's rules, then deliver per channel.

Shared by the execution's Notifier and the rollback alarm. Which channels is asked
by a local activity (the notify file lives on the worker); each delivery is an
activity on the records queue, so a wedged channel never takes a slot AWS work
needs. It never raises: a channel that refuses or is down fails its own delivery,
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
