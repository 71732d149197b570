"""Webhook signatures: ``Remit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.

The key is the endpoint's whole secret (``whsec_...``) as UTF-8; the signed bytes are the timestamp, a dot and the
raw request body exactly as sent. Receivers check the HMAC and that ``t`` is recent (against replays). This module
uses only the standard library so that docs/webhooks.md can show the same code to receivers.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from remit.domain.clock import SystemClock

HEADER = "Remit-Signature"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.".encode() + body`` keyed by the secret."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the ``Remit-Signature`` header."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def _parse(header: str) -> tuple[int | None, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    return timestamp, candidates


def verify_signature(
    secret: str,
    header: str,
    body: bytes | str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: datetime | float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is within ``tolerance_s`` of ``now``.

    ``now`` is a datetime or unix seconds; by default the system clock. Several ``v1=`` values may be present
    (one per secret while a secret is being rolled); any one matching is enough.
    """
    timestamp, candidates = _parse(header or "")
    if timestamp is None or not candidates:
        return False
    if now is None:
        now = SystemClock().now()
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(current - timestamp) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = signature(secret, timestamp, raw)
    return any(hmac.compare_digest(expected, c) for c in candidates)
