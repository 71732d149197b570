"""Drafts left for review (``--review-drafts``): a subscription line taken off a draft, or a deleted draft, comes
back at the next bill run, whichever period it billed, and the key's later lines are not in the way."""

from decimal import Decimal

from remit.service_layer import bill_run, clocks, invoices, subscriptions
from tests import builders as b


def _review_drafts(app):
    b.seller(app, auto_finalize=False)
    b.plan(app, "basic", "31.00")
    b.plan(app, "pro", "62.00")
    clock_id = b.clock(app, b.utc(2026, 3, 1))
    cus = b.customer(app, clock_id)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
    return clock_id, cus, sub


def _billed(app, cus):
    """(kind, service start, amount) of every line, sorted: what is billed whatever invoice holds it."""
    return sorted((k, s, a) for k, s, _e, a in b.lines_of(app, cus))


def test_monthly__in_advance__calendar__a_line_taken_off_an_older_draft_comes_back(app):
    """March's fee is taken off its draft after April's was billed: the next run bills March again."""
    clock_id, cus, _sub = _review_drafts(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 12))
    march, april = b.invoices_of(app, cus)
    with app.uow() as uow:
        invoices.remove_draft_line(uow, march["id"], march["lines"][0]["id"])
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _billed(app, cus) == [("subscription", "2026-03-01", "31.00"), ("subscription", "2026-04-01", "31.00")]


def test_monthly__in_advance__calendar__a_deleted_older_draft_is_billed_again(app):
    clock_id, cus, _sub = _review_drafts(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 1, 12))
    march, _april = b.invoices_of(app, cus)
    with app.uow() as uow:
        invoices.delete_draft(uow, march["id"])
    clocks.advance(app.uow, clock_id, b.utc(2026, 4, 2))
    assert _billed(app, cus) == [("subscription", "2026-03-01", "31.00"), ("subscription", "2026-04-01", "31.00")]


def test_monthly__in_advance__calendar__a_first_line_taken_off_after_its_correction_is_billed_again(app):
    """Basic's March line (revision 0) is taken off after an upgrade credited its unused half (revision 1): the
    next run bills Basic's first half again as a new revision, instead of failing on the key's revision 1."""
    clock_id, cus, sub = _review_drafts(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 2))
    with app.uow() as uow:
        subscriptions.change_plan(uow, sub, "pro")  # 2 March: 1 day of Basic, 30 of Pro
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 3))
    first = b.invoices_of(app, cus)[0]
    with app.uow() as uow:
        invoices.remove_draft_line(uow, first["id"], first["lines"][0]["id"])
    result = bill_run.run(app.uow, b.utc(2026, 3, 3), test_clock_id=clock_id)
    assert result.failures == []
    basic = [(k, a) for k, s, e, a in b.lines_of(app, cus) if s <= "2026-03-02" and a != "60.00"]
    assert sum(Decimal(a) for _k, a in basic) == Decimal("1.00")  # Basic's one day, billed once
    assert sum(int(a.replace(".", "")) for _k, _s, a in _billed(app, cus)) == 100 + 6000


def test_a_manual_line_is_rounded_once_from_the_exact_product(app):
    """1.000000001 × 10,005,000,000.999999999 is exactly 10,005,000,011.004999999999999999: 10,005,000,011.00. The
    product was taken in the default context (28 digits), which rounded it to ...011.00500000000000000 first, and
    the line came to 10,005,000,011.01."""
    clock_id, cus, _sub = _review_drafts(app)
    clocks.advance(app.uow, clock_id, b.utc(2026, 3, 1, 12))
    (draft,) = b.invoices_of(app, cus)
    with app.uow() as uow:
        invoices.add_draft_line(
            uow, draft["id"], "Correction", Decimal("1.000000001"), Decimal("10005000000.999999999")
        )
    (edited,) = b.invoices_of(app, cus)
    line = next(ln for ln in edited["lines"] if ln["description"] == "Correction")
    assert (line["amount"], edited["total"]) == ("10005000011.00", "10005000042.00")
