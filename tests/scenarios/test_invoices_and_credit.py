"""What happens around invoices: one-off charges, customer credit, credit notes, voiding, repeated bill runs."""

import pytest

from remit.domain.errors import Conflict
from remit.service_layer import bill_run, clocks, credit_notes, invoices, subscriptions
from tests import builders as b


def _monthly(app, amount="30.00", start=(2026, 3, 1), plans=()):
    b.seller(app)
    b.plan(app, "basic", amount)
    for code, price in plans:
        b.plan(app, code, price)
    clock_id = b.clock(app, b.utc(*start))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    return clock_id, cus, sub


def _balance(app, cus):
    with app.uow() as uow:
        return invoices.customer_balance(uow, cus)


def _summary(inv):
    keys = ("status", "total", "credited", "applied_balance", "amount_due")
    return tuple(inv[k] for k in keys)


def test_monthly__in_advance__calendar__one_off_charge_alone_goes_on_the_next_bill_run(app):
    """A one-off added when nothing else is due is invoiced by the next bill run (here the test clock's
    catch-up run), on an invoice of its own; it is not held back for the next cycle invoice."""
    clock_id, cus, _sub = _monthly(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 5))
    with app.uow() as uow:
        credit_notes.add_one_off(uow, cus, description="Set-up", unit_amount="49.50", quantity=2)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    assert [(i["issued_on"], [ln["kind"] for ln in i["lines"]], i["total"]) for i in b.invoices_of(app, cus)] == [
        ("2026-03-01", ["subscription"], "30.00"),
        ("2026-03-05", ["one_off"], "99.00"),
        ("2026-04-01", ["subscription"], "30.00"),
    ]


def test_monthly__in_advance__calendar__one_off_charge_on_the_next_invoice(app, request):
    clock_id, cus, sub = _monthly(app, plans=[("pro", "50.00")])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    with app.uow() as uow:
        item = credit_notes.add_one_off(uow, cus, description="Set-up", unit_amount="49.50", quantity=2)
    assert item["amount_minor"] == 9900
    # The next invoice is the one the upgrade writes on the same day: the one-off rides along with it.
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    totals = [i["total"] for i in b.invoices_of(app, cus)]
    assert totals == ["30.00", "109.33", "50.00"]  # 99.00 - 15.48 + 25.81

    # One-off lines (no service period) come last on every database, as in the upcoming-invoice preview.
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("proration", "2026-03-16", "2026-04-01", "-15.48"),  # 16/31 × 30.00
        ("subscription", "2026-03-16", "2026-04-01", "25.81"),  # 16/31 × 50.00
        ("one_off", None, None, "99.00"),
        ("subscription", "2026-04-01", "2026-05-01", "50.00"),
    ]


def test_monthly__in_advance__calendar__downgrade_credit_is_consumed_by_later_invoices(app):
    """60.00 -> 10.00 halfway through April: -30.00 + 5.00 = -25.00 becomes customer credit, which pays May
    (10.00) and June (10.00) and 5.00 of July."""
    clock_id, cus, sub = _monthly(app, "60.00", start=(2026, 4, 1), plans=[("lite", "10.00")])
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 16))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "lite", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 16, 12))
    assert _balance(app, cus) == 2500
    clocks.advance(app.uow, clock_id, b.utc(2026, 7, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-04-01", "2026-05-01", "60.00"),
        ("proration", "2026-04-16", "2026-05-01", "-30.00"),
        ("subscription", "2026-04-16", "2026-05-01", "5.00"),
        ("subscription", "2026-05-01", "2026-06-01", "10.00"),
        ("subscription", "2026-06-01", "2026-07-01", "10.00"),
        ("subscription", "2026-07-01", "2026-08-01", "10.00"),
    ]
    assert [_summary(i) for i in b.invoices_of(app, cus)] == [
        ("open", "60.00", "0.00", "0.00", "60.00"),
        ("paid", "-25.00", "0.00", "-25.00", "0.00"),  # a negative invoice: its total moves to the balance
        ("paid", "10.00", "0.00", "10.00", "0.00"),
        ("paid", "10.00", "0.00", "10.00", "0.00"),
        ("open", "10.00", "0.00", "5.00", "5.00"),
    ]
    assert _balance(app, cus) == 0


def test_monthly__in_advance__calendar__credit_notes_on_open_and_paid_invoices(app):
    clock_id, cus, _sub = _monthly(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    march, april, may = b.invoices_of(app, cus)

    # Partial, then whole (what remains), on an open invoice: it reduces what is due, and settles it.
    with app.uow() as uow:
        partial = credit_notes.issue_credit_note(uow, march["id"], amount="10.00")
    assert (partial["amount_minor"], partial["to_balance_minor"]) == (1000, 0)
    with app.uow() as uow:
        rest = credit_notes.issue_credit_note(uow, march["id"])
    assert (rest["amount_minor"], rest["to_balance_minor"]) == (2000, 0)

    # Whole, on an open invoice in one go.
    with app.uow() as uow:
        credit_notes.issue_credit_note(uow, april["id"], reason="duplicate")

    # Partial on a paid invoice: it becomes customer credit.
    with app.uow() as uow:
        invoices.mark_paid(uow, may["id"])
    with app.uow() as uow:
        on_paid = credit_notes.issue_credit_note(uow, may["id"], amount="7.50")
    assert on_paid["to_balance_minor"] == 750
    with pytest.raises(Conflict) as raised, app.uow() as uow:
        credit_notes.issue_credit_note(uow, may["id"], amount="22.51")  # only 22.50 is left to credit
    assert raised.value.code == "credit_exceeds_invoice"
    assert [n["number"] for n in (partial, rest, on_paid)] == ["CN-2026-000001", "CN-2026-000002", "CN-2026-000004"]

    assert [_summary(i) for i in b.invoices_of(app, cus)] == [
        ("paid", "30.00", "30.00", "0.00", "0.00"),
        ("paid", "30.00", "30.00", "0.00", "0.00"),
        ("paid", "30.00", "7.50", "0.00", "0.00"),
    ]
    assert _balance(app, cus) == 750

    # The next invoice consumes the credit; credited subscription lines are not billed again.
    clocks.advance(app.uow, clock_id, b.utc(2026, 6, 1))
    june = b.invoices_of(app, cus)[-1]
    assert _summary(june) == ("open", "30.00", "0.00", "7.50", "22.50")
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
        ("subscription", "2026-05-01", "2026-06-01", "30.00"),
        ("subscription", "2026-06-01", "2026-07-01", "30.00"),
    ]
    assert _balance(app, cus) == 0


def test_monthly__in_advance__calendar__void_returns_consumed_credit(app):
    clock_id, cus, _sub = _monthly(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    (march,) = b.invoices_of(app, cus)
    with app.uow() as uow:
        invoices.mark_paid(uow, march["id"])
    with app.uow() as uow:
        credit_notes.issue_credit_note(uow, march["id"], amount="12.00")  # 12.00 of credit
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1))
    april = b.invoices_of(app, cus)[-1]
    assert _summary(april) == ("open", "30.00", "0.00", "12.00", "18.00")
    assert _balance(app, cus) == 0

    with app.uow() as uow:
        voided = invoices.void(uow, april["id"])
    assert (voided["status"], voided["amount_due_minor"]) == ("void", 0)
    assert _balance(app, cus) == 1200  # the credit April had consumed is back
    with pytest.raises(Conflict) as raised, app.uow() as uow:
        credit_notes.issue_credit_note(uow, april["id"])
    assert raised.value.code == "invoice_not_creditable"

    # Voiding does not make the generator bill April again; May uses the returned credit.
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    assert b.lines_of(app, cus) == [
        ("subscription", "2026-03-01", "2026-04-01", "30.00"),
        ("subscription", "2026-04-01", "2026-05-01", "30.00"),
        ("subscription", "2026-05-01", "2026-06-01", "30.00"),
    ]
    assert _summary(b.invoices_of(app, cus)[-1]) == ("open", "30.00", "0.00", "12.00", "18.00")


@pytest.mark.parametrize("timing", ["in_advance", "in_arrears"])
def test_monthly__calendar__bill_run_again_at_the_same_time_writes_nothing(app, timing):
    b.seller(app)
    b.plan(app, "basic", "30.00", timing=timing)
    b.plan(app, "pro", "50.00", timing=timing)
    clock_id = b.clock(app, b.utc(2026, 3, 10))
    changed, canceled = b.customer(app, clock_id), b.customer(app, clock_id)
    subs = {}
    for cus in (changed, canceled):
        with app.uow() as uow:
            subs[cus] = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 16))
    with app.uow() as uow:
        subscriptions.change_plan(uow, subs[changed], "pro", when="now")
    with app.uow() as uow:
        subscriptions.cancel(uow, subs[canceled])
    with app.uow() as uow:
        credit_notes.add_one_off(uow, changed, description="Training", unit_amount="100.00")
    at = b.utc(2026, 5, 1)
    clocks.advance(app.uow, clock_id, at)
    before = {cus: b.invoices_of(app, cus) for cus in (changed, canceled)}
    assert before[changed] and before[canceled]

    for _ in range(2):
        again = bill_run.run(app.uow, at, test_clock_id=clock_id)
        assert again.invoices_created == 0
    assert {cus: b.invoices_of(app, cus) for cus in (changed, canceled)} == before


def test_monthly__in_advance__calendar__a_credit_note_never_credits_more_than_the_invoice_holds(app):
    """An upgrade on 16 March: -15.48 + 25.81 = 10.33. The whole invoice credits 10.33 (it once credited the
    positive line, 25.81), a lump sum above that is refused, and lines cannot be credited past the invoice by
    naming one twice; an amount and lines together are refused."""
    clock_id, cus, sub = _monthly(app, "30.00", plans=[("pro", "50.00")])
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro", when="now")
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 16, 12))
    upgrade = b.invoices_of(app, cus)[-1]
    assert upgrade["total"] == "10.33"
    positive = [ln for ln in upgrade["lines"] if not ln["amount"].startswith("-")][0]
    with pytest.raises(Conflict) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, upgrade["id"], amount="10.34")
    assert refused.value.code == "credit_exceeds_invoice"
    twice = [{"line_id": positive["id"], "amount": "6.00"}, {"line_id": positive["id"], "amount": "6.00"}]
    with pytest.raises(Conflict) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, upgrade["id"], lines=twice)
    assert (refused.value.code, refused.value.field) == ("credit_exceeds_invoice", "lines")
    from remit.domain.errors import ValidationError

    past_the_line = [{"line_id": positive["id"], "amount": "20.00"}, {"line_id": positive["id"], "amount": "20.00"}]
    with pytest.raises(ValidationError) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, upgrade["id"], lines=past_the_line)
    assert (refused.value.code, refused.value.field) == ("invalid_amount", "lines[1].amount")
    with pytest.raises(ValidationError) as refused, app.uow() as uow:
        credit_notes.issue_credit_note(uow, upgrade["id"], amount="1.00", lines=twice[:1])
    assert refused.value.code == "conflicting_fields"
    with app.uow() as uow:
        note = credit_notes.issue_credit_note(uow, upgrade["id"])
    assert (note["amount_minor"], note["to_balance_minor"]) == (1033, 0)
    assert _summary(b.invoices_of(app, cus)[-1]) == ("paid", "10.33", "10.33", "0.00", "0.00")
    assert _balance(app, cus) == 0


def test_monthly__in_arrears__seat_changes_adding_up_to_half_a_cent_are_rounded_once_and_explained(app):
    """1.13 per seat for April (30 days), in arrears: 2 seats on the 1st, 5 from the 2nd, 2 from the 27th, so
    2 × 1/30 + 5 × 25/30 + 2 × 4/30 = 4.5 seat-months at 1.13, 5.085 exactly: 5.09 half up. The three slices were
    each written to 28 digits and added up to 5.084999…, billed 5.08."""
    from remit.service_layer import explain

    b.seller(app)
    b.plan(app, "seats", timing="in_arrears", model="per_unit", config={"unit_price": "1.13"})
    clock_id = b.clock(app, b.utc(2026, 4, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "seats", anchor="calendar", quantity=2)
    for day, seats in ((2, 5), (27, 2)):
        clocks.advance(app.uow, clock_id, b.utc(2026, 4, day))
        with app.uow() as uow:
            subscriptions.change_quantity(uow, sub, seats)
    clocks.advance(app.uow, clock_id, b.utc(2026, 5, 1))
    (invoice,) = b.invoices_of(app, cus)
    (line,) = invoice["lines"]
    assert (line["kind"], line["amount"], invoice["total"]) == ("subscription", "5.09", "5.09")
    with app.uow() as uow:
        why = explain.explain_line(uow, invoice["id"], line["id"])
    assert "Before rounding: 5.085 EUR; rounded to 5.09 EUR." in why["explanation"], why["explanation"]


def test_a_one_off_charge_of_a_flat_price_in_a_tiny_quantity_is_billed_not_a_server_error(app):
    """A flat one-off price of 9,999,999,999,999.99 charged for a quantity of 0.000000001 costs the flat amount; its
    unit price (amount ÷ quantity, shown to the nano) has 31 digits, more than the default context's 28, and the
    charge failed with decimal.InvalidOperation."""
    from remit.service_layer import catalog

    b.seller(app)
    with app.uow() as uow:
        product_id = catalog.create_product(uow, "Onboarding", "one_off")
        config = {"amount": "9999999999999.99"}
        price_id = catalog.create_price(uow, product_id, {"currency": "EUR", "model": "flat", "config": config})
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        item = credit_notes.add_one_off(uow, cus, price_id=price_id, quantity="0.000000001")
    assert item["amount_minor"] == 999999999999999
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    (invoice,) = b.invoices_of(app, cus)
    (line,) = invoice["lines"]
    assert (line["kind"], line["quantity"], line["amount"]) == ("one_off", "0.000000001", "9999999999999.99")
    assert line["unit_price"] == "9999999999999990000000"
