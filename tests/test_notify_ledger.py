"""Deliveries kept in the read model (`store/deliveries.py`, migration 0007): a delivery retried on
another worker does not post again, on SQLite and on PostgreSQL; a ledger that does not answer never
holds a message.
"""

from __future__ import annotations

import logging

import pytest
from temporalio.testing import ActivityEnvironment

from activities.notify.config import parse_notify_file
from activities.notify.delivery import NotifyActivities
from domain.notifications import DeliveryInput, DeliveryResult, DeliveryStatus, Notification
from store.repository import Store
from tests import test_store
from tests.notify_support import HttpReceiver, approval_request

# The store tests' fixtures: an empty SQLite file and an empty PostgreSQL database per test.
db_url, store = test_store.db_url, test_store.store

HOOK_SECRET = "whsec-ledger-31d7"


def worker_notify(receiver: HttpReceiver, ledger: Store | None) -> NotifyActivities:
    """One worker's delivery activities, as `build_worker` makes them: the notify file, its store."""
    acts = NotifyActivities(parse_notify_file(f"""
channels:
  hook: {{type: webhook, url: "{receiver.url}/hook", secret: env:T_LEDGER_SECRET}}
"""))
    acts.ledger = ledger.deliveries if ledger is not None else None
    return acts


async def deliver(acts: NotifyActivities, n: Notification) -> DeliveryResult:
    return await ActivityEnvironment().run(acts.deliver, DeliveryInput(notification=n, channel="hook"))


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_LEDGER_SECRET", HOOK_SECRET)


async def test_a_delivery_retried_on_another_worker_does_not_post_again(
    store: Store, db_url: str, receiver: HttpReceiver,
) -> None:
    other = await Store.open(db_url)  # the second worker's own connection to the same database
    try:
        first, second = worker_notify(receiver, store), worker_notify(receiver, other)
        n = approval_request()
        sent = await deliver(first, n)
        again = await deliver(second, n)  # the same attempt, retried elsewhere after the send
        assert sent.status is DeliveryStatus.SENT
        assert again.status is DeliveryStatus.DUPLICATE and again.dedup_key == sent.dedup_key
        assert len(receiver.requests) == 1
        assert (await deliver(second, n.model_copy(update={"sequence": 1}))).status is DeliveryStatus.SENT
        assert len(receiver.requests) == 2  # the next reminder is another delivery
        kept = await other.deliveries.done(f"hook|{sent.dedup_key}")
        assert kept is not None and kept.status is DeliveryStatus.SENT and HOOK_SECRET not in kept.model_dump_json()
    finally:
        await other.close()


async def test_a_ledger_that_does_not_answer_never_holds_a_message(
    receiver: HttpReceiver, caplog: pytest.LogCaptureFixture,
) -> None:
    nobody = await Store.open("postgresql://postgres@127.0.0.1:1/reclaim", migrate=False)  # nothing listens
    try:
        acts = worker_notify(receiver, nobody)
        with caplog.at_level(logging.WARNING, logger="reclaim.notify"):
            sent = await deliver(acts, approval_request())
            again = await deliver(acts, approval_request())
        assert sent.status is DeliveryStatus.SENT and again.status is DeliveryStatus.DUPLICATE  # in-process guard
        assert len(receiver.requests) == 1
        assert "delivery ledger unreadable" in caplog.text and "delivery ledger did not keep" in caplog.text
    finally:
        await nobody.close()
