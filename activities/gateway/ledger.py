"""Where a worker's AWS requests go: by phase (the activity that asked) and operation.

Two counts, both cheap (a counter under a lock per call):

- `sent`: every request that left for AWS (retries included), by the phase that sent it; the
  gateway's own batched calls are sent from its threads, so their phase is `GATEWAY`.
- `asked`: every call a kind made through the gateway that went into one of its batches or was
  answered fresh without a call (`remembered`), by the phase that asked. A phase's share of
  AWS's requests is its `sent` plus its part (asked less remembered) of the `GATEWAY` batches
  of the same operation.

`ids_per_call` is the distribution of ids (or lookups) each batched call carried. The worker
logs the ledger as one JSON line at shutdown (`worker.py`); the race bench reads it.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from temporalio import activity

LEDGER_LINE = "AWS calls by phase: "
"""The prefix of the ledger's line in the worker's log."""
GATEWAY = "gateway batch"
OUTSIDE = "outside an activity"


def phase() -> str:
    """The activity type running this thread's call (validate, backup, apply, verify, ...)."""
    if not activity.in_activity():
        return OUTSIDE
    return activity.info().activity_type


class CallLedger:
    """Counts of one worker's AWS calls; shared by every gateway and session of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: Counter[tuple[str, str]] = Counter()
        self.asked: Counter[tuple[str, str]] = Counter()
        self.remembered: Counter[tuple[str, str]] = Counter()
        self.ids_per_call: dict[str, Counter[int]] = {}

    def ask(self, operation: str) -> None:
        key = (phase(), operation)
        with self._lock:
            self.asked[key] += 1

    def remember(self, operation: str) -> None:
        """A read answered fresh, without a call (coalesce.Freshness), by the phase that asked it."""
        key = (phase(), operation)
        with self._lock:
            self.remembered[key] += 1

    def batch(self, operation: str, ids: int) -> None:
        with self._lock:
            self.ids_per_call.setdefault(operation, Counter())[ids] += 1

    def hook(self, session: Any) -> None:
        """A boto3 session hook: count every request as it is sent (retries included)."""

        def before_send(event_name: str, **_: Any) -> None:
            operation = event_name.split(".", 2)[2]
            key = (phase() if not threading.current_thread().name.startswith("gather-") else GATEWAY, operation)
            with self._lock:
                self.sent[key] += 1

        session.events.register("before-send", before_send)

    def report(self) -> dict[str, Any]:
        """JSON-ready: sent and asked as {phase: {operation: n}}, ids per call as {operation: {ids: calls}}."""
        with self._lock:
            return {"sent": _nested(self.sent), "asked": _nested(self.asked),
                    "remembered_by_phase": _nested(self.remembered),
                    "ids_per_call": {op: dict(sorted(c.items())) for op, c in sorted(self.ids_per_call.items())}}


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (where, operation), n in sorted(counts.items()):
        out.setdefault(where, {})[operation] = n
    return out
