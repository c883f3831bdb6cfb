"""Delivery metrics of this worker process, in their own `CollectorRegistry`.

The worker serves no HTTP today, so nothing scrapes these yet: `generate_latest(REGISTRY)` is
what a worker metrics endpoint (or `prometheus_client.start_http_server(port, registry=REGISTRY)`)
would expose. The API's /metrics runs in another process and cannot see them.
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
