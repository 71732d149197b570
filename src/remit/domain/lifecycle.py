"""Lifecycles as data: one transition table per kind of object.

A table maps ``(state, action)`` to the next state. A pair that is absent is forbidden, and ``transition``
reports it as a conflict with the stable code ``<what>_invalid_transition``. Keeping the rules in tables makes
them easy to read, to test exhaustively and to show in documentation.

Creating an object is not a transition (a subscription starts ``trialing`` or ``active``, an invoice starts
``draft``), and neither is deleting a draft invoice: drafts are deleted, not moved to another state.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import TypeVar

from remit.domain.errors import Conflict


class SubscriptionStatus(str, Enum):  # noqa: UP042 (str mix-in kept on purpose: the agreed API)
    TRIALING = "trialing"
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELED = "canceled"


class InvoiceStatus(str, Enum):  # noqa: UP042 (str mix-in kept on purpose: the agreed API)
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


_S = SubscriptionStatus
SUBSCRIPTION_TRANSITIONS: Mapping[tuple[SubscriptionStatus, str], SubscriptionStatus] = MappingProxyType(
    {
        (_S.TRIALING, "end_trial"): _S.ACTIVE,
        (_S.TRIALING, "pause"): _S.PAUSED,
        (_S.ACTIVE, "pause"): _S.PAUSED,
        (_S.PAUSED, "resume"): _S.ACTIVE,
        (_S.TRIALING, "cancel"): _S.CANCELED,
        (_S.ACTIVE, "cancel"): _S.CANCELED,
        (_S.PAUSED, "cancel"): _S.CANCELED,
        **{
            (state, action): state
            for state in (_S.TRIALING, _S.ACTIVE, _S.PAUSED)
            for action in ("change_plan", "change_quantity")
        },
    }
)

_I = InvoiceStatus
INVOICE_TRANSITIONS: Mapping[tuple[InvoiceStatus, str], InvoiceStatus] = MappingProxyType(
    {
        (_I.DRAFT, "finalize"): _I.OPEN,
        (_I.OPEN, "pay"): _I.PAID,
        (_I.OPEN, "void"): _I.VOID,
        (_I.OPEN, "mark_uncollectible"): _I.UNCOLLECTIBLE,
        (_I.UNCOLLECTIBLE, "pay"): _I.PAID,
        (_I.UNCOLLECTIBLE, "void"): _I.VOID,
    }
)

# How each action reads after "A <state> <what> cannot ...".
_ACTION_PHRASES = {
    "end_trial": "end its trial",
    "pause": "be paused",
    "resume": "be resumed",
    "cancel": "be canceled",
    "change_plan": "change plan",
    "change_quantity": "change quantity",
    "finalize": "be finalized",
    "pay": "be paid",
    "void": "be voided",
    "mark_uncollectible": "be marked uncollectible",
}

StateT = TypeVar("StateT", bound=Enum)


def actions_from(table: Mapping[tuple[StateT, str], StateT], state: StateT) -> list[str]:
    """The actions ``state`` accepts, in table order."""
    return [action for (from_state, action) in table if from_state == state]


def transition(
    table: Mapping[tuple[StateT, str], StateT],
    state: StateT,
    action: str,
    *,
    what: str,
    field: str = "status",
) -> StateT:
    """The state after ``action``; a ``Conflict`` coded ``<what>_invalid_transition`` if it is not allowed."""
    try:
        return table[(state, action)]
    except KeyError:
        pass
    state_name = str(getattr(state, "value", state)).replace("_", " ")
    article = "An" if state_name[:1].lower() in "aeiou" else "A"
    phrase = _ACTION_PHRASES.get(action, f"be {action.replace('_', ' ')}")
    raise Conflict(
        f"{what}_invalid_transition",
        f"{article} {state_name} {what.replace('_', ' ')} cannot {phrase}.",
        field,
    )
