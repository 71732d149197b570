from __future__ import annotations

import itertools

import pytest

from remit.domain.errors import Conflict, ErrorKind
from remit.domain.lifecycle import (
    INVOICE_TRANSITIONS,
    SUBSCRIPTION_TRANSITIONS,
    InvoiceStatus,
    SubscriptionStatus,
    actions_from,
    transition,
)

S = SubscriptionStatus
I = InvoiceStatus  # noqa: E741

SUBSCRIPTION_ACTIONS = ["end_trial", "pause", "resume", "cancel", "change_plan", "change_quantity"]
INVOICE_ACTIONS = ["finalize", "pay", "void", "mark_uncollectible", "delete"]

EXPECTED_SUBSCRIPTION = {
    (S.TRIALING, "end_trial"): S.ACTIVE,
    (S.TRIALING, "pause"): S.PAUSED,
    (S.ACTIVE, "pause"): S.PAUSED,
    (S.PAUSED, "resume"): S.ACTIVE,
    (S.TRIALING, "cancel"): S.CANCELED,
    (S.ACTIVE, "cancel"): S.CANCELED,
    (S.PAUSED, "cancel"): S.CANCELED,
    (S.TRIALING, "change_plan"): S.TRIALING,
    (S.ACTIVE, "change_plan"): S.ACTIVE,
    (S.PAUSED, "change_plan"): S.PAUSED,
    (S.TRIALING, "change_quantity"): S.TRIALING,
    (S.ACTIVE, "change_quantity"): S.ACTIVE,
    (S.PAUSED, "change_quantity"): S.PAUSED,
}

EXPECTED_INVOICE = {
    (I.DRAFT, "finalize"): I.OPEN,
    (I.OPEN, "pay"): I.PAID,
    (I.OPEN, "void"): I.VOID,
    (I.OPEN, "mark_uncollectible"): I.UNCOLLECTIBLE,
    (I.UNCOLLECTIBLE, "pay"): I.PAID,
    (I.UNCOLLECTIBLE, "void"): I.VOID,
}


def test_tables_are_exactly_as_specified() -> None:
    assert dict(SUBSCRIPTION_TRANSITIONS) == EXPECTED_SUBSCRIPTION
    assert dict(INVOICE_TRANSITIONS) == EXPECTED_INVOICE


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        SUBSCRIPTION_TRANSITIONS[(S.CANCELED, "resume")] = S.ACTIVE  # type: ignore[index]


@pytest.mark.parametrize(("state", "action"), list(itertools.product(S, SUBSCRIPTION_ACTIONS)))
def test_every_subscription_pair(state: SubscriptionStatus, action: str) -> None:
    expected = EXPECTED_SUBSCRIPTION.get((state, action))
    if expected is not None:
        assert transition(SUBSCRIPTION_TRANSITIONS, state, action, what="subscription") is expected
        return
    with pytest.raises(Conflict) as info:
        transition(SUBSCRIPTION_TRANSITIONS, state, action, what="subscription")
    assert info.value.code == "subscription_invalid_transition"
    assert info.value.field == "status"
    assert info.value.kind is ErrorKind.CONFLICT
    assert state.value in info.value.message


@pytest.mark.parametrize(("state", "action"), list(itertools.product(I, INVOICE_ACTIONS)))
def test_every_invoice_pair(state: InvoiceStatus, action: str) -> None:
    expected = EXPECTED_INVOICE.get((state, action))
    if expected is not None:
        assert transition(INVOICE_TRANSITIONS, state, action, what="invoice") is expected
        return
    with pytest.raises(Conflict) as info:
        transition(INVOICE_TRANSITIONS, state, action, what="invoice")
    assert info.value.code == "invoice_invalid_transition"
    assert info.value.field == "status"


def test_terminal_states_accept_nothing() -> None:
    assert actions_from(SUBSCRIPTION_TRANSITIONS, S.CANCELED) == []
    assert actions_from(INVOICE_TRANSITIONS, I.PAID) == []
    assert actions_from(INVOICE_TRANSITIONS, I.VOID) == []
    assert actions_from(INVOICE_TRANSITIONS, I.DRAFT) == ["finalize"]


def test_messages_read_well() -> None:
    with pytest.raises(Conflict) as info:
        transition(SUBSCRIPTION_TRANSITIONS, S.CANCELED, "pause", what="subscription")
    assert info.value.message == "A canceled subscription cannot be paused."
    with pytest.raises(Conflict) as info:
        transition(INVOICE_TRANSITIONS, I.OPEN, "finalize", what="invoice", field="invoice_status")
    assert info.value.message == "An open invoice cannot be finalized."
    assert info.value.field == "invoice_status"
    with pytest.raises(Conflict) as info:
        transition(INVOICE_TRANSITIONS, I.DRAFT, "delete", what="credit_note")
    assert info.value.code == "credit_note_invalid_transition"
    assert info.value.message == "A draft credit note cannot be delete."


def test_plain_string_states_work() -> None:
    assert transition(SUBSCRIPTION_TRANSITIONS, "paused", "resume", what="subscription") == S.ACTIVE  # type: ignore[arg-type]
