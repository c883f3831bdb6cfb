"""Delivery metrics of this worker process, in their own `CollectorRegistry`.

The worker serves them on its own `/metrics` when RECLAIM_WORKER_METRICS_PORT is set
(`runtime/worker_metrics.py`); the API's /metrics runs in another process and cannot see them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

SENT = Counter("reclaim_notifications_sent", "Notifications delivered (or skipped: nobody to send to).",
               ["channel", "type", "status"], registry=REGISTRY)
FAILED = Counter("reclaim_notifications_failed", "Delivery attempts that failed.",
                 ["channel", "type", "retryable"], registry=REGISTRY)
LATENCY = Histogram("reclaim_notification_send_seconds", "Time to hand a notification to its channel.",
                    ["channel", "type"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
