"""The delivery activities: which channels (`route_notification`), then one notification to one channel.

`NotifyActivities.deliver` (`deliver_notification`, input `DeliveryInput`): finds the channel in
the notify file, waits for its rate limit, resolves its secrets (only here, only now), sends, and
remembers the (channel, dedup key) it delivered, so a retried or repeated activity in this process
returns `duplicate` without posting again.

Errors: a channel that answered 5xx/429 or could not be reached raises a retryable
`ChannelUnavailable` (a receiver's Retry-After becomes the next retry's delay); one that refused
(4xx, SMTP 5xx, SNS validation) a non-retryable `ChannelRejected`; an unknown channel or a secret
that does not resolve, a non-retryable `ChannelMisconfigured`. The caller (the workflow observer) schedules it so that none of these can
fail or delay the execution.

Across workers: with a `ledger` (the worker's read model, `store/deliveries.py`) a delivery is
also kept there by its key and asked for before sending, so an attempt retried on another worker
after its send reached the channel (the first worker died, or the activity timed out while the
receiver was slow) returns `duplicate` instead of posting again. The one repeat left: a worker that
dies between the send and keeping it. Every payload carries the dedup key (webhook body and
`X-Reclaim-Delivery`, Slack context line, e-mail Message-ID, SNS attribute and FIFO deduplication
id) so such a receiver can still drop it. A ledger that does not answer never holds a message:
the delivery goes on with the in-process guard alone, and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notify import metrics
from activities.notify.base import ChannelError, registry
from activities.notify.config import SecretError, load_notify_file, resolve_secrets
from activities.notify.links import LinkBase
from activities.notify.ratelimit import TokenBucket
from domain.notifications import (
    DeliveryInput,
    DeliveryResult,
    DeliveryStatus,
    Notification,
    NotifyFile,
    Routing,
    route,
)

log = logging.getLogger("reclaim.notify")

UNAVAILABLE = "ChannelUnavailable"
REJECTED = "ChannelRejected"
MISCONFIGURED = "ChannelMisconfigured"
#: Name these in the delivery's retry policy (they are raised non-retryable anyway).
NON_RETRYABLE_TYPES = [REJECTED, MISCONFIGURED]

#: Longer than this behind the rate limit: give the slot back and let Temporal retry later.
MAX_RATE_WAIT = 10.0
#: How long a delivery waits for the ledger before going on without it (an outage of the read
#: model must not hold a message; the in-process guard still stands).
LEDGER_PATIENCE = 5.0


class DeliveryLedger(Protocol):
    """Deliveries kept by key where every worker sees them (`store.deliveries.DeliveryRecords`)."""

    def done(self, key: str) -> Awaitable[DeliveryResult | None]: ...

    def record(self, key: str, result: DeliveryResult) -> Awaitable[None]: ...


class NotifyActivities:
    def __init__(self, notify_file: NotifyFile, *, remember: int = 10_000, links: LinkBase | None = None,
                 ledger: DeliveryLedger | None = None) -> None:
        """`links`: where the Web UI and the approval page are, to link them in each message sent;
        `ledger`: deliveries kept across workers (`build_worker` gives its store's)."""
        self.file = notify_file
        self.links = links
        self.ledger = ledger
        self._delivered: OrderedDict[str, DeliveryResult] = OrderedDict()
        self._remember = remember
        self._locks: dict[str, asyncio.Lock] = {}
        self._buckets = {name: TokenBucket(c.rate_limit.per_minute, c.rate_limit.burst)
                         for name, c in notify_file.channels.items()}

    @classmethod
    def from_path(cls, path: str | Path, *, links: LinkBase | None = None) -> NotifyActivities:
        return cls(load_notify_file(path), links=links)

    def all(self) -> list[Callable[..., Any]]:
        return [self.route, self.deliver]

    def _seen(self, key: str) -> DeliveryResult | None:
        done = self._delivered.get(key)
        return done.model_copy(update={"status": DeliveryStatus.DUPLICATE}) if done else None

    async def _admit(self, channel: str) -> None:
        bucket = self._buckets[channel]
        wait = bucket.reserve()
        if wait > MAX_RATE_WAIT:
            bucket.refund()
            raise ApplicationError(f"channel {channel}: rate limit, next send in {wait:.0f} s", type=UNAVAILABLE,
                                   next_retry_delay=timedelta(seconds=wait))
        if wait:
            await asyncio.sleep(wait)

    @activity.defn(name="route_notification")
    async def route(self, notification: Notification) -> Routing:
        """The channels the notify file's rules pick for this notification now (quiet hours: the worker's clock).

        A notification in its rule's quiet hours is dropped for that rule, not delayed.
        """
        return Routing(channels=route(notification, self.file.rules, datetime.now(UTC)))

    @activity.defn(name="deliver_notification")
    async def deliver(self, request: DeliveryInput) -> DeliveryResult:
        n, channel = request.notification, request.channel
        key = f"{channel}|{n.dedup_key}"
        if (seen := self._seen(key)) is not None:
            return seen
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if (seen := self._seen(key)) is not None:
                    return seen
                if (kept := await self._kept(key)) is not None:
                    self._remember_delivery(key, kept)
                    return kept.model_copy(update={"status": DeliveryStatus.DUPLICATE})
                return await self._send(key, request)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    async def _send(self, key: str, request: DeliveryInput) -> DeliveryResult:
        n, channel = request.notification, request.channel
        config = self.file.channels.get(channel)
        if config is None:
            raise ApplicationError(f"no channel {channel!r} in the notify file", type=MISCONFIGURED,
                                   non_retryable=True)
        sender = registry()[config.type]
        await self._admit(channel)
        try:
            secrets = resolve_secrets(config)
        except SecretError as exc:
            raise ApplicationError(f"channel {channel}: {exc}", type=MISCONFIGURED, non_retryable=True) from None
        if self.links is not None:
            n = self.links.fill(n)
        started = time.monotonic()
        try:
            outcome = await sender(n, config, secrets)
        except ChannelError as exc:
            message = str(exc)
            for value in secrets.values():
                message = message.replace(value, "***")
            metrics.FAILED.labels(channel, config.type, str(exc.retryable).lower()).inc()
            log.warning("notification %s to %s failed: %s", n.dedup_key, channel, message)
            wait = timedelta(seconds=exc.retry_after) if exc.retryable and exc.retry_after else None
            raise ApplicationError(f"channel {channel}: {message}", type=UNAVAILABLE if exc.retryable else REJECTED,
                                   non_retryable=not exc.retryable, next_retry_delay=wait) from None
        finally:
            metrics.LATENCY.labels(channel, config.type).observe(time.monotonic() - started)
        outcome = outcome.model_copy(update={"channel": channel})
        self._remember_delivery(key, outcome)
        await self._keep(key, outcome)
        metrics.SENT.labels(channel, config.type, outcome.status.value).inc()
        log.info("notification %s to %s: %s (%s)", n.dedup_key, channel, outcome.status.value, outcome.detail)
        return outcome

    def _remember_delivery(self, key: str, outcome: DeliveryResult) -> None:
        self._delivered[key] = outcome
        while len(self._delivered) > self._remember:
            self._delivered.popitem(last=False)

    async def _kept(self, key: str) -> DeliveryResult | None:
        if self.ledger is None:
            return None
        try:
            return await asyncio.wait_for(self.ledger.done(key), LEDGER_PATIENCE)
        except Exception as exc:  # an unreadable ledger never holds a message
            log.warning("delivery ledger unreadable (%s); %s goes on the in-process guard alone",
                        type(exc).__name__, key.split("|", 1)[-1])
            return None

    async def _keep(self, key: str, outcome: DeliveryResult) -> None:
        """After the send: failing here must not fail the activity (a retry would post again)."""
        if self.ledger is None:
            return
        try:
            await asyncio.wait_for(self.ledger.record(key, outcome), LEDGER_PATIENCE)
        except Exception as exc:  # sent is sent; the in-process guard still holds
            log.warning("delivery ledger did not keep %s (%s)", outcome.dedup_key, type(exc).__name__)
