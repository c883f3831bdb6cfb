"""`X-Reclaim-Signature: t=<unix>,v1=<hex>`: HMAC-SHA256 of "<t>.<body>" with the channel's secret.

A receiver recomputes it over the raw body and refuses a signature that does not match
or a timestamp more than `tolerance` seconds away from its clock (a replay).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Reclaim-Signature"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header's value for this body at this time."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """True when `header` signs exactly `body` with `secret`, made within `tolerance` seconds of `now`."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))
