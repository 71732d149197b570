"""The catalog of domain event types: every type Remit records in the outbox (``events``), and so every type a
webhook endpoint can receive or ``GET /v1/events?type=`` can ask for.

Recording a type that is not listed here is a programming error (``UnitOfWork.emit`` refuses it), and
docs/webhooks.md documents exactly these types (a test compares the two), so the catalog, the code and the
reference cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from remit.domain.errors import ValidationError

EVENT_TYPES: tuple[str, ...] = (
    # accounts and catalog
    "legal_entity.created",
    "customer.created",
    "plan.created",
    "plan.version_published",
    "price_override.set",
    "invoice_item.created",
    # subscriptions
    "subscription.created",
    "coupon.redeemed",
    "subscription.updated",
    "subscription.pause_scheduled",
    "subscription.resume_scheduled",
    "subscription.cancellation_scheduled",
    "subscription.paused",
    "subscription.resumed",
    "subscription.canceled",
    "subscription.activated",
    "subscription.schedule_released",
    # invoices
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "credit_note.issued",
    # bill runs
    "bill_run.customer_failed",
    # usage
    "usage.alert_triggered",
    "usage.events_canceled",
    "usage.threshold_reached",
    "alert.created",
    "alert.deleted",
    "meter.updated",
    "meter.deactivated",
    "meter.reactivated",
    # wallets
    "wallet.created",
    "wallet.updated",
    "wallet.voided",
    "wallet.credits_granted",
    "wallet.credits_consumed",
    "wallet.credits_expired",
    "wallet.credits_restored",
    "wallet.credits_voided",
    "wallet.credits_refunded",
    "wallet.topped_up",
    "wallet.balance_low",
    "wallet.depleted",
    "wallet.recurring_grant_created",
    "wallet.recurring_grant_updated",
    "wallet.recurring_grant_canceled",
)
KNOWN = frozenset(EVENT_TYPES)
FAMILIES = frozenset(t.split(".", 1)[0] for t in EVENT_TYPES)


def check_recorded(type_: str) -> None:
    """Refuse to record a type missing from the catalog (a programming error, never a user's)."""
    if type_ not in KNOWN:
        raise ValueError(f"{type_!r} is not in remit.domain.event_types.EVENT_TYPES: add it there and document it")


def check_pattern(value: object, field: str) -> str:
    """An event type to listen to or list: a known type (``invoice.paid``), a family of them (``invoice.*``), or
    ``*`` for every type. Anything else (a typo, a type Remit never records) is ``invalid_event_type``: it would
    silently match nothing."""
    if isinstance(value, str) and (value == "*" or value in KNOWN or _is_family(value)):
        return value
    shown = repr(value) if isinstance(value, str) and len(value) <= 64 else "This value"
    raise ValidationError(
        "invalid_event_type",
        f'{shown} is not an event type Remit records: give one such as "invoice.finalized", a family such as '
        '"invoice.*", or "*" (the types are listed in docs/webhooks.md).',
        field,
    )


def check_patterns(values: Sequence[object], field: str) -> list[str]:
    return [check_pattern(v, field) for v in values]


def _is_family(value: str) -> bool:
    return value.endswith(".*") and value[:-2] in FAMILIES


def matches(pattern: str, type_: str) -> bool:
    """Whether ``type_`` is what ``pattern`` (a type, ``family.*`` or ``*``) asks for."""
    return pattern == "*" or pattern == type_ or (pattern.endswith(".*") and type_.startswith(pattern[:-1]))
