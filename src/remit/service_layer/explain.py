"""Why an invoice line says what it says: the answer an auditor or a customer asks for.

``explain_line`` gathers what the generator recorded when it wrote the line (the period, the slices and their
proration fractions, the price model's breakdown; for usage, the meter, its aggregation, the windows measured,
the quantity, included and billable units) and what surrounds it (the price as configured, the line it corrects,
the lines that later corrected it), and states it in plain sentences. It reads only; nothing is recomputed, so
the explanation is what was billed even if the catalog or the usage changed since.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import and_, or_, select

from remit.adapters.db import tables as t
from remit.domain.errors import NotFound
from remit.domain.rating.aggregations import WIDE
from remit.service_layer.accounts import local_midnight
from remit.service_layer.unit_of_work import UnitOfWork
from remit.service_layer.views import money, plain


def explain_line(uow: UnitOfWork, invoice_id: str, line_id: str) -> dict[str, Any]:
    ln = t.invoice_lines.c
    line = (
        uow.conn.execute(select(t.invoice_lines).where(ln.id == line_id, ln.invoice_id == invoice_id))
        .mappings()
        .first()
    )
    if line is None:
        if uow.conn.execute(select(t.invoices.c.id).where(t.invoices.c.id == invoice_id)).first() is None:
            raise NotFound("invoice", invoice_id, "invoice_id")  # as the API answers, for the CLI too
        raise NotFound("invoice_line", line_id, "line_id")
    invoice = uow.conn.execute(
        select(
            t.invoices.c.currency,
            t.invoices.c.number,
            t.invoices.c.customer_id,
            t.invoices.c.created_at,
            t.customers.c.timezone,
        )
        .join(t.customers, t.customers.c.id == t.invoices.c.customer_id)
        .where(t.invoices.c.id == invoice_id)
    ).one()
    code = invoice.currency
    details: Mapping[str, Any] = line["details"] or {}
    price = None
    if line["price_id"]:
        price = uow.conn.execute(select(t.prices).where(t.prices.c.id == line["price_id"])).mappings().first()
    usage: Mapping[str, Any] | None = details.get("usage")
    # A correction of a charge nothing is measured for any more (every event of its group canceled, say) records
    # no measurement (only its meter): the line it corrects says which meter, group and windows, and so which
    # events were canceled.
    if usage is not None and usage.get("nothing_measured"):
        usage = None
    measured = usage if usage is not None else _corrected_usage(uow, line)
    meter = None
    if measured and measured.get("meter"):
        meter = uow.conn.execute(select(t.meters).where(t.meters.c.code == measured["meter"])).mappings().first()
    windows = _windows(measured, invoice.timezone)
    events = _events_behind(invoice.customer_id, measured, windows)
    canceled = _canceled_in(uow, invoice.customer_id, measured, windows)
    corrections = [
        {"id": r.id, "invoice_id": r.invoice_id, "kind": r.kind, "amount": money(r.amount_minor, code)}
        for r in uow.conn.execute(
            select(ln.id, ln.invoice_id, ln.kind, ln.amount_minor)
            .where(ln.corrects_line_id == line_id)
            .order_by(ln.revision)
        )
    ]
    said = _sentences(line, details, usage, price, code, corrections, events, canceled, measured)
    if line["kind"] == "usage_threshold":
        said = _threshold_sentence(invoice.created_at) + said
    return {
        "object": "invoice_line_explanation",
        "invoice_id": invoice_id,
        "invoice_number": invoice.number,
        "line_id": line_id,
        "kind": line["kind"],
        "description": line["description"],
        "currency": code,
        "subscription_id": line["subscription_id"],
        "period": {"start_on": plain(line["period_start_on"]), "end_on": plain(line["period_end_on"])},
        "service": {"start_on": plain(line["service_start_on"]), "end_on": plain(line["service_end_on"])},
        "quantity": plain(line["quantity"]),
        "unit_price": plain(line["unit_price"]),
        "subtotal": money(line["subtotal_minor"], code),
        "discount": money(line["discount_minor"], code),
        "amount": money(line["amount_minor"], code),
        "billed_before": money(details.get("billed_before_minor"), code) if "billed_before_minor" in details else None,
        "price": _price(price),
        "negotiated_price": details.get("negotiated_price"),
        "meter": _meter(meter),
        "usage": _usage(usage, code),
        "usage_events": events,
        "canceled_events": canceled,
        "slices": details.get("slices", []),
        "breakdown": details.get("breakdown", []),
        "corrects_line_id": line["corrects_line_id"],
        "corrected_by": corrections,
        "explanation": said,
    }


def _threshold_sentence(invoiced_at: datetime) -> list[str]:
    """A threshold line measured the events received by the time its invoice was written, though its windows run
    to the period's end (and the events listed there go on growing after it)."""
    return [
        "Billed before the period ended, when the unbilled usage reached the subscription's usage threshold: it "
        f"counts the events received by {plain(invoiced_at)}; the rest of the period's usage is billed by a later "
        "threshold invoice or at the period's end (usage_remainder)."
    ]


MAX_CANCELED_SHOWN = 100


def _corrected_usage(uow: UnitOfWork, line: Mapping[Any, Any]) -> Mapping[str, Any] | None:
    """The usage recorded by the line this usage correction corrects (None for other lines)."""
    if not line["corrects_line_id"] or line["kind"] not in ("usage_correction", "usage_remainder"):
        return None
    ln = t.invoice_lines.c
    first = uow.conn.execute(select(ln.details).where(ln.id == line["corrects_line_id"])).scalar()
    usage = (first or {}).get("usage")
    return usage if isinstance(usage, Mapping) and usage.get("meter") else None


def _windows(usage: Mapping[str, Any] | None, tz: str) -> list[tuple[datetime, datetime]]:
    """A usage line's windows as instants: when their first day began and their last ended, in the customer's
    time zone. None for other lines (and true-ups, which measure no events)."""
    if not usage or not usage.get("meter") or "minimum_minor" in usage:
        return []
    return [
        (
            local_midnight(date.fromisoformat(str(w["start_on"])), tz),
            local_midnight(date.fromisoformat(str(w["end_on"])), tz),
        )
        for w in usage.get("windows", [])
    ]


def _canceled_in(
    uow: UnitOfWork, customer_id: str, usage: Mapping[str, Any] | None, windows: list[tuple[datetime, datetime]]
) -> list[dict[str, Any]]:
    """The canceled events of the line's meter (and group) dated in its windows, oldest first (at most
    ``MAX_CANCELED_SHOWN``): why a usage line, or its correction, counts less than was sent."""
    if not usage or not windows:
        return []
    c, e = t.usage_event_cancellations.c, t.usage_events.c
    query = (
        select(c.transaction_id, c.occurred_at, c.canceled_at, c.reason, e.group_key)
        .join(
            t.usage_events,
            and_(
                e.customer_id == c.customer_id,
                e.meter_code == c.meter_code,
                e.occurred_at == c.occurred_at,
                e.id == c.event_id,
            ),
        )
        .where(
            c.customer_id == customer_id,
            c.meter_code == usage["meter"],
            or_(*(and_(c.occurred_at >= start, c.occurred_at < end) for start, end in windows)),
        )
        .order_by(c.occurred_at, c.transaction_id)
    )
    group = usage.get("group") or {}
    wanted = json.dumps(list(group.values())) if group else None
    out = []
    for row in uow.conn.execute(query):
        if wanted is not None and row.group_key != wanted:
            continue
        out.append(
            {
                "transaction_id": row.transaction_id,
                "occurred_at": plain(row.occurred_at),
                "canceled_at": plain(row.canceled_at),
                "reason": row.reason,
            }
        )
        if len(out) == MAX_CANCELED_SHOWN:
            break
    return out


def _events_behind(
    customer_id: str, usage: Mapping[str, Any] | None, windows: list[tuple[datetime, datetime]]
) -> list[dict[str, Any]]:
    """Where the events a usage line measured are listed: per window, its instants and the `GET /v1/usage_events`
    query that lists them (canceled ones included, shown as not counted)."""
    if not usage or not windows:
        return []
    out = []
    for start, end in windows:
        gte, lt = plain(start), plain(end)
        params = [("customer_id", customer_id), ("meter", usage["meter"]), ("occurred_gte", gte), ("occurred_lt", lt)]
        params += [("group", f"{k}:{v}") for k, v in (usage.get("group") or {}).items()]
        out.append({"occurred_gte": gte, "occurred_lt": lt, "list": f"/v1/usage_events?{urlencode(params)}"})
    return out


def _price(row: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": row["id"],
        "name": row["name"],
        "model": row["model"],
        "config": row["config"],
        "timing": row["timing"],
        "interval": row["interval_unit"],
        "interval_count": row["interval_count"],
        "usage": row["usage"],
        "plan_version_id": row["plan_version_id"],
    }


def _meter(row: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "code": row["code"],
        "name": row["name"],
        "aggregation": row["aggregation"],
        "field": row["field"],
        "expression": row["expression"],
        "filters": row["filters"],
        "group_by": row["group_by"],
        "carry_over": bool(row.get("carry_over")),
    }


def _usage(usage: Mapping[str, Any] | None, code: str) -> dict[str, Any] | None:
    if usage is None:
        return None
    out = {k: v for k, v in usage.items() if not k.endswith("_minor")}
    for key in ("minimum_minor", "usage_minor", "period_minimum_minor"):
        if key in usage:
            out[key[: -len("_minor")]] = money(usage[key], code)
    return out


def _sentences(
    line: Mapping[Any, Any],
    details: Mapping[str, Any],
    usage: Mapping[str, Any] | None,
    price: Mapping[Any, Any] | None,
    code: str,
    corrections: list[dict[str, Any]],
    events: list[dict[str, Any]],
    canceled: list[dict[str, Any]],
    measured: Mapping[str, Any] | None = None,
) -> list[str]:
    out: list[str] = []
    period = details.get("period") or {}
    if period:
        out.append(f"Billing period {_day(period['start_on'])} to {_day(period['end_on'])} (end exclusive).")
    if price is not None:
        out.append(f"Price {price['name']!r} ({price['id']}), model {price['model']}, billed {price['timing']}.")
    negotiated = details.get("negotiated_price")
    if negotiated:
        settings = ", ".join(f"{k} {json.dumps(v)}" for k, v in negotiated["config"].items())
        out.append(
            f"This customer's negotiated price ({negotiated['override_id']}) replaced the list price's model: "
            f"{negotiated['model']}, {settings}."
        )
    # A commitment prorated to part of the period (lines written since it is recorded): per period × the share.
    prorated = (
        f"{usage['minimum_per_period']} {code} per period × {usage['share']}"
        if usage is not None and "minimum_per_period" in usage
        else None
    )
    if usage is not None and "period_minimum_minor" in usage:
        out.append(
            f"Minimum commitments {money(usage['period_minimum_minor'], code)} {code} for the period, of which "
            f"this price's {money(usage['minimum_minor'], code)} {code} (the period's other commitments apply to "
            f"other days of it); usage lines came to {money(usage['usage_minor'], code)} {code}; the true-ups "
            "bill the shortfall, shared in proportion to the commitments."
        )
        if prorated:
            out.append(
                f"This price's commitment: {prorated} (the part of the period it applied to) = "
                f"{money(usage['minimum_minor'], code)} {code}."
            )
    elif usage is not None and "minimum_minor" in usage:
        committed = f"{money(usage['minimum_minor'], code)} {code}"
        how = f"{prorated} (the part of the period billed) = {committed}" if prorated else f"{committed} for the period"
        out.append(
            f"Minimum commitment {how}; usage lines came to {money(usage['usage_minor'], code)} {code}; the true-up "
            "bills the shortfall."
        )
    elif usage is not None:
        windows = ", ".join(f"{_day(w['start_on'])} to {_day(w['end_on'])}" for w in usage.get("windows", []))
        what = usage.get("expression") or usage.get("field") or "events"
        group = usage.get("group") or {}
        where = (" for " + ", ".join(f"{k}={v}" for k, v in group.items())) if group else ""
        measured, plural = usage.get("measured", usage["quantity"]), "" if usage["events"] == 1 else "s"
        out.append(
            f"Meter {usage['meter']}: {usage['aggregation']} of {what}{where} over {windows}: "
            f"{measured} from {usage['events']} event{plural}."
        )
        if usage.get("carry_over"):
            out.append(
                "The meter carries its last value over: "
                + (
                    "no event in these windows, so the value last reported before their end counts."
                    if usage["events"] == 0
                    else "the latest event before the windows' end counts."
                )
            )
        rounding = usage.get("rounding")
        if isinstance(rounding, dict):
            places = rounding["precision"]
            to = f"{places} decimal{'' if places == 1 else 's'}" if places >= 0 else f"a multiple of {10**-places}"
            out.append(
                f"Measured {usage['measured']}; the meter rounds ({rounding['mode']}) to {to}: {usage['quantity']}."
            )
        if usage.get("included_units") not in (None, "0"):
            # Lines written since included units record their proration say how the figure came about.
            per_period, share = usage.get("included_per_period"), usage.get("share")
            how = (
                f"{per_period} units included per period × {share} (the part of the period billed) = "
                if per_period and share
                else ""
            )
            out.append(f"{how}{usage['included_units']} units included; {usage['billable_units']} billable.")
        out.append(f"Rated with the {usage.get('price_model')} model.")
    elif measured is not None:
        group = measured.get("group") or {}
        where = (" for " + ", ".join(f"{k}={v}" for k, v in group.items())) if group else ""
        out.append(
            f"Meter {measured['meter']}{where}: no event counts in this period any more, so this line credits what "
            "was billed for it."
        )
    if measured is not None and "minimum_minor" not in measured:
        for w in events:
            out.append(f"The events measured, {w['occurred_gte']} to {w['occurred_lt']}: {w['list']}")
        if canceled:
            more = "" if len(canceled) < MAX_CANCELED_SHOWN else f" (the first {MAX_CANCELED_SHOWN})"
            out.append(
                f"Canceled events dated in these windows{more}: lines rated after an event's cancellation do not "
                "count it; the line that did (rated after it arrived, before its cancellation) is credited by a "
                "later correction."
            )
            for x in canceled:
                why = f": {x['reason']}" if x["reason"] else ""
                out.append(f"  {x['transaction_id']} of {x['occurred_at']}, canceled {x['canceled_at']}{why}")
    for b in details.get("breakdown", []):
        out.append(f"  {b['description']}: {b['amount']}")
    slices = details.get("slices", [])
    if usage is None and (len(slices) > 1 or any(s.get("fraction") not in ("1/1", None) for s in slices)):
        for s in slices:
            out.append(
                f"  {_day(s['start_on'])} to {_day(s['end_on'])}: quantity {s['quantity']}, "
                f"fraction {s['fraction']} of the period, {s['amount']}."
            )
    if line["corrects_line_id"]:
        before = details.get("billed_before_minor")
        billed = f" ({money(before, code)} {code} was billed before)" if before is not None else ""
        out.append(f"Corrects line {line['corrects_line_id']}{billed}; this line bills the difference.")
    for c in corrections:
        out.append(f"Later corrected by line {c['id']} ({c['kind']}, {c['amount']} {code}).")
    out.extend(_rounding_and_discount(line, slices, usage, code, details.get("before_rounding")))
    out.append(f"Amount: {money(line['amount_minor'], code)} {code}.")
    return out


def _rounding_and_discount(
    line: Mapping[Any, Any],
    slices: list[dict[str, Any]],
    usage: Mapping[str, Any] | None,
    code: str,
    before_rounding: str | None = None,
) -> list[str]:
    """How the unrounded amounts above became the line's amount: the one rounding of its subtotal (a first line's:
    a correction bills a difference of rounded subtotals, a true-up a share of the shortfall), and its discount.
    ``before_rounding``: the exact subtotal, when the slices' amounts (each to 28 digits) do not add up to it."""
    out = []
    subtotal = money(line["subtotal_minor"], code)
    if slices and not line["corrects_line_id"] and not (usage and "minimum_minor" in usage):
        with localcontext(WIDE):  # exact: an amount may have more digits than the default context keeps
            raw = (
                Decimal(before_rounding)
                if before_rounding
                else sum((Decimal(str(s["amount"])) for s in slices), Decimal(0))
            )
            written = format(raw.normalize(), "f")  # (normalize rounds to the context's digits: the wide one's)
        if raw != Decimal(str(subtotal)):
            out.append(f"Before rounding: {written} {code}; rounded to {subtotal} {code}.")
    if line["discount_minor"]:
        out.append(
            f"Subtotal {subtotal} {code}, discount {money(line['discount_minor'], code)} {code}: "
            f"amount {money(line['amount_minor'], code)} {code}."
        )
    return out


def _day(value: str | date) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)
