"""A charge is never credited twice: by a credit note and by a later correction of the same line key.

Per key (subscription, charge, period), what was billed (every line, corrections included) less what credit notes
credited on those lines never goes below zero: a correction credits at most what the key still holds once its
credit notes are counted, and a credit note credits a line at most what it holds once the corrections linked to
it on other invoices are counted.
"""

import pytest

from remit.domain.errors import Conflict, ValidationError
from remit.service_layer import catalog, clocks, credit_notes, invoices, subscriptions, usage, usage_cancellation
from tests import builders as b


def _usage_plan(app):
    """A 49.00 fee in advance and API calls at 0.10 in arrears; March's 1,000 calls (600 + 400, sent at its end,
    so that they can be canceled within the grace period) bill 100.00."""
    b.seller(app)
    with app.uow() as uow:
        usage.create_meter(uow, "api_calls", "api_calls", "sum", "calls")
        catalog.create_plan(
            uow,
            "api",
            "Api",
            [
                {"currency": "EUR", "model": "flat", "config": {"amount": "49.00"}, "name": "Platform fee"},
                {
                    "currency": "EUR",
                    "model": "per_unit",
                    "config": {"unit_price": "0.10"},
                    "name": "API calls",
                    "usage": {"meter": "api_calls"},
                },
            ],
        )
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        subscriptions.create_subscription(uow, cus, "api", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 31, 12))
    events = [
        {"customer_id": cus, "code": "api_calls", "transaction_id": tx, "timestamp": at, "properties": {"calls": n}}
        for tx, at, n in (("big", "2026-03-30T00:00:00Z", 600), ("small", "2026-03-31T00:00:00Z", 400))
    ]
    with app.uow() as uow:
        usage.ingest(uow, events)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 3))
    march = b.invoices_of(app, cus)[1]
    (line,) = [ln for ln in march["lines"] if ln["kind"] == "usage"]
    assert line["amount"] == "100.00"
    return clock_id, cus, march, line


def _cancel(app, cus, *transaction_ids):
    with app.uow() as uow:
        result = usage_cancellation.cancel_events(
            uow, [{"customer_id": cus, "transaction_id": tx} for tx in transaction_ids]
        )
    assert len(result.canceled) == len(transaction_ids)


def _credit_line(app, invoice_id, line_id, amount):
    with app.uow() as uow:
        return credit_notes.issue_credit_note(uow, invoice_id, lines=[{"line_id": line_id, "amount": amount}])


def _corrections(app, cus):
    return [ln for ln in b.lines_of(app, cus) if ln[0] in ("usage_correction", "proration")]


def _preview_lines(app, cus):
    with app.uow() as uow:
        preview = clocks.preview_upcoming(uow, cus)
    return sorted((ln["kind"], ln["amount_minor"]) for ln in preview["lines"])


def test_a_usage_line_credited_in_full_is_not_credited_again_by_a_canceled_event(app):
    """March's 100.00 of calls are credited in full by a credit note; the 400 calls canceled afterwards would
    credit 40.00 more: nothing is left to credit, so no correction is written, now or at any later run."""
    clock_id, cus, march, line = _usage_plan(app)
    _credit_line(app, march["id"], line["id"], "100.00")
    _cancel(app, cus, "small")
    assert [kind for kind, _ in _preview_lines(app, cus)] == ["subscription"]  # May's fee: no correction
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 4))
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 2))
    assert _corrections(app, cus) == []
    with app.uow() as uow:
        assert invoices.customer_balance(uow, cus) == 0  # March paid nothing for its calls, and got nothing back


def test_a_partial_credit_note_leaves_room_for_a_correction_up_to_what_is_left(app):
    """30.00 of March's 100.00 is credited; the 400 calls canceled bring March to 60.00: the correction credits
    40.00 (net 30.00 ≥ 0). Canceling the 600 calls too would credit 60.00 more: only 30.00 is left."""
    clock_id, cus, march, line = _usage_plan(app)
    _credit_line(app, march["id"], line["id"], "30.00")
    _cancel(app, cus, "small")
    assert ("usage_correction", -4000) in _preview_lines(app, cus)  # the upcoming invoice agrees with the bill run
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 4))
    assert _corrections(app, cus) == [("usage_correction", "2026-03-01", "2026-04-01", "-40.00")]
    _cancel(app, cus, "big")
    assert ("usage_correction", -3000) in _preview_lines(app, cus)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 5))
    assert _corrections(app, cus)[1:] == [("usage_correction", "2026-03-01", "2026-04-01", "-30.00")]
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 2))
    assert len(_corrections(app, cus)) == 2  # and nothing more at later runs


def test_a_line_corrected_on_a_later_invoice_is_credited_at_most_what_is_left(app):
    """The reverse order: the 400 calls canceled are credited (-40.00) on a later invoice; a credit note on
    March's 100.00 line then credits at most 60.00, after which canceling the other 600 calls credits nothing."""
    clock_id, cus, march, line = _usage_plan(app)
    _cancel(app, cus, "small")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 4))
    assert _corrections(app, cus) == [("usage_correction", "2026-03-01", "2026-04-01", "-40.00")]
    with pytest.raises(ValidationError) as refused:
        _credit_line(app, march["id"], line["id"], "60.01")
    assert (refused.value.code, refused.value.field) == ("invalid_amount", "lines[0].amount")
    with pytest.raises(Conflict) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, march["id"], amount="109.01")  # 49.00 of fee + 60.00 of calls
    assert refused.value.code == "credit_exceeds_invoice"
    assert _credit_line(app, march["id"], line["id"], "60.00")["amount_minor"] == 6000
    with pytest.raises(ValidationError):
        _credit_line(app, march["id"], line["id"], "0.01")
    _cancel(app, cus, "big")  # March's calls down to none: nothing is left to credit
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 5))
    assert len(_corrections(app, cus)) == 1


def _fee_plan(app):
    b.seller(app)
    b.plan(app, "basic", "100.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    (march,) = b.invoices_of(app, cus)
    return clock_id, cus, sub, march, march["lines"][0]


def test_a_fee_credited_in_full_is_not_credited_again_by_a_cancellation_now(app):
    """March's 100.00 fee is credited in full; canceling now on 16 March would credit the 16 unused days
    (51.61): nothing is left to credit."""
    clock_id, cus, sub, march, line = _fee_plan(app)
    _credit_line(app, march["id"], line["id"], "100.00")
    with app.uow() as uow:
        subscriptions.cancel(uow, sub)
    assert _preview_lines(app, cus) == []
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _corrections(app, cus) == []


def test_a_fee_partly_credited_is_credited_for_unused_time_up_to_what_is_left(app):
    """70.00 of March's fee is credited; the unused time (51.61) is credited up to the 30.00 left."""
    clock_id, cus, sub, march, line = _fee_plan(app)
    _credit_line(app, march["id"], line["id"], "70.00")
    with app.uow() as uow:
        subscriptions.cancel(uow, sub)
    assert _preview_lines(app, cus) == [("proration", -3000)]  # the upcoming invoice agrees with the bill run
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16, 12))
    assert _corrections(app, cus) == [("proration", "2026-03-16", "2026-04-01", "-30.00")]


def test_a_fee_credited_for_unused_time_is_credited_by_a_credit_note_at_most_what_is_left(app):
    """The reverse order: canceling now on 16 March credits 51.61 on an invoice of its own; a credit note on
    March's 100.00 fee then credits at most 48.39."""
    clock_id, cus, sub, march, line = _fee_plan(app)
    with app.uow() as uow:
        subscriptions.cancel(uow, sub)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16, 12))
    assert _corrections(app, cus) == [("proration", "2026-03-16", "2026-04-01", "-51.61")]
    with pytest.raises(ValidationError) as refused:
        _credit_line(app, march["id"], line["id"], "48.40")
    assert refused.value.code == "invalid_amount"
    with pytest.raises(Conflict) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, march["id"], amount="48.40")
    assert refused.value.code == "credit_exceeds_invoice"
    with app.uow() as uow:
        note = credit_notes.issue_credit_note(uow, march["id"])  # in whole: 48.39 is all it still holds
    assert note["amount_minor"] == 4839
    with pytest.raises(ValidationError), app.uow() as uow:
        credit_notes.issue_credit_note(uow, march["id"])  # nothing is left
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert len(_corrections(app, cus)) == 1  # and the bill run credits nothing more either
