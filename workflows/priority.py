"""Temporal priority and fairness for Reclaim's workflows (README, Across an organization).

One tenant's 10,000-item plan must not starve another's single urgent change. Every
workflow carries its customer as the fairness key, so the task queue serves customers
in turn however many tasks each has queued; and a plan's items run at a lower
priority than what a person started by hand or asked to undo. Children and
activities inherit their workflow's priority; a revert asks for the highest.

The Temporal server honours them with `matching.useNewMatcher` (priority) and
`matching.enableFairness` (fairness) on; without, they are carried and ignored.
"""

from __future__ import annotations

from temporalio.common import Priority

#: Priority keys, 1 the highest (Temporal's default is 3).
UNDO = 1
BY_HAND = 2
BULK = 4


def for_execution(customer_id: str) -> Priority:
    """An execution started on its own (CLI, API): a person is waiting for it."""
    return Priority(priority_key=BY_HAND, fairness_key=customer_id)


def for_plan(customers: str) -> Priority:
    """A plan and, by inheritance, its items: bulk work, served in turn with other customers'
    (a plan of several customers is a tenant of its own; Temporal keeps 64 characters of a key)."""
    return Priority(priority_key=BULK, fairness_key=customers[:64])
