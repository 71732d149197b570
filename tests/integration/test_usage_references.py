"""How events name their customer: by `customer_id`, by `external_customer_id` (the customer's id in the sender's
system), or by `subscription_id` alone; a subscription given with a customer must be that customer's. The API's
path and the import's resolve them alike, deduplicate on the customer they resolve to, and never reveal a customer
the caller may not see."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from remit.adapters.db import tables as t
from remit.service_layer import accounts, subscriptions, usage
from remit.service_layer.scoping import Visibility
from remit.service_layer.usage_import import import_events
from tests import builders as b

NOW = datetime(2026, 1, 1, tzinfo=UTC)
AT = (NOW - timedelta(minutes=1)).isoformat()


def _setup(app):
    b.seller(app)
    b.usage_plan(app)
    cus = b.customer(app, None, external_id="acme-42")
    other = b.customer(app, None)
    with app.uow() as uow:
        sub = subscriptions.create_subscription(uow, cus, "api")
        other_sub = subscriptions.create_subscription(uow, other, "api")
    return cus, sub, other, other_sub


def _event(txn, **refs):
    return {"code": "calls", "transaction_id": txn, "timestamp": AT, "properties": {"n": 1}, **refs}


def _batch(cus, sub, other_sub):
    return [
        _event("by-id", customer_id=cus),
        _event("by-external", external_customer_id="acme-42"),
        _event("by-subscription", subscription_id=sub),
        _event("id-and-subscription", customer_id=cus, subscription_id=sub),
        _event("external-and-subscription", external_customer_id="acme-42", subscription_id=sub),
        _event("by-id", external_customer_id="acme-42"),  # the same customer and transaction id: a duplicate
        _event("wrong-subscription", customer_id=cus, subscription_id=other_sub),
        _event("unknown-subscription", subscription_id="sub_nope"),
        _event("unknown-external", external_customer_id="nobody"),
        _event("both", customer_id=cus, external_customer_id="acme-42"),
        _event("none"),
        _event("bad-subscription", subscription_id=7),
    ]


REFUSED = [
    (6, "unknown_subscription", "subscription_id"),
    (7, "unknown_subscription", "subscription_id"),
    (8, "unknown_customer", "external_customer_id"),
    (9, "conflicting_customer_references", "external_customer_id"),
    (10, "unknown_customer", "customer_id"),
    (11, "invalid_subscription_id", "subscription_id"),
]


def _stored(app):
    e = t.usage_events.c
    with app.engine.connect() as conn:
        return sorted(conn.execute(select(e.transaction_id, e.customer_id, e.subscription_id)).all())


def test_each_way_of_naming_the_customer_through_the_api(app):
    cus, sub, _, other_sub = _setup(app)
    with app.uow() as uow:
        result = usage.ingest(uow, _batch(cus, sub, other_sub))
    assert [a["transaction_id"] for a in result.accepted] == [
        "by-id",
        "by-external",
        "by-subscription",
        "id-and-subscription",
        "external-and-subscription",
    ]
    assert [d["index"] for d in result.duplicates] == [5]
    assert [(r["index"], r["error"]["code"], r["error"]["field"]) for r in result.rejected] == REFUSED
    assert _stored(app) == [
        ("by-external", cus, None),
        ("by-id", cus, None),
        ("by-subscription", cus, sub),
        ("external-and-subscription", cus, sub),
        ("id-and-subscription", cus, sub),
    ]
    messages = {r["index"]: r["error"]["message"] for r in result.rejected}
    assert messages[8] == "No customer with external id 'nobody'."
    assert messages[6] == f"No subscription of this customer with id {other_sub!r}."
    assert "customer_id, external_customer_id or subscription_id" in messages[10]


def test_the_import_resolves_references_exactly_as_the_api(app):
    cus, sub, _, other_sub = _setup(app)
    report = import_events(app.engine, app.clock, [(i + 1, e) for i, e in enumerate(_batch(cus, sub, other_sub))])
    assert (report.accepted, report.duplicates, report.rejected) == (5, 1, 6)
    assert [(r["line"] - 1, r["code"], r["field"]) for r in report.rejected_events] == REFUSED
    assert [row[0] for row in _stored(app)] == [
        "by-external",
        "by-id",
        "by-subscription",
        "external-and-subscription",
        "id-and-subscription",
    ]


def test_a_caller_never_learns_of_a_customer_it_may_not_see(app):
    cus, sub, _, _ = _setup(app)
    with app.uow() as uow:
        elsewhere = accounts.create_legal_entity(uow, "Elsewhere", "US", "USD")
    scoped = Visibility(legal_entity_id=str(elsewhere))
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [_event("x", external_customer_id="acme-42"), _event("y", subscription_id=sub)],
            vis=scoped,
        )
    assert [(r["error"]["code"], r["error"]["field"]) for r in result.rejected] == [
        ("unknown_customer", "external_customer_id"),
        ("unknown_subscription", "subscription_id"),
    ]
    assert all(cus not in r["error"]["message"] for r in result.rejected)
    assert _stored(app) == []


def test_a_customer_the_key_may_not_see_is_unknown_whatever_subscription_is_named(app):
    cus, sub, other, other_sub = _setup(app)
    with app.uow() as uow:
        elsewhere = accounts.create_legal_entity(uow, "Elsewhere", "US", "USD")
    scoped = Visibility(legal_entity_id=str(elsewhere))
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                _event("own", customer_id=cus, subscription_id=sub),  # the customer's own subscription
                _event("foreign", customer_id=cus, subscription_id=other_sub),  # another customer's
            ],
            vis=scoped,
        )
    answers = [(r["error"]["code"], r["error"]["field"], r["error"]["message"]) for r in result.rejected]
    assert answers[0] == answers[1] == ("unknown_customer", "customer_id", f"No customer with id {cus!r}.")


def test_text_no_database_holds_is_refused_event_by_event(app):
    cus, sub, _, _ = _setup(app)
    with app.uow() as uow:
        result = usage.ingest(
            uow,
            [
                _event("nul-customer", customer_id="cus_\x00"),
                _event("nul-external", external_customer_id="acme\x00"),
                _event("surrogate-subscription", subscription_id="sub_\ud800"),
                _event("surrogate-\ud800", customer_id=cus),
                {**_event("surrogate-property", customer_id=cus), "properties": {"n": 1, "note": "\ud800"}},
                _event("fine", customer_id=cus),
            ],
        )
    assert [a["transaction_id"] for a in result.accepted] == ["fine"]
    assert [(r["index"], r["error"]["code"], r["error"]["field"]) for r in result.rejected] == [
        (0, "unknown_customer", "customer_id"),
        (1, "unknown_customer", "external_customer_id"),
        (2, "invalid_subscription_id", "subscription_id"),
        (3, "invalid_transaction_id", "transaction_id"),
        (4, "invalid_properties", "properties"),
    ]


def test_a_batch_looks_up_only_its_own_references(app, monkeypatch):
    """The per-engine cache of subscriptions may hold many; a batch gets only the ones it names (external ids are
    looked up each time: another legal entity or mode may take one at any time)."""
    _, sub, _, _ = _setup(app)
    with app.engine.connect() as conn:
        usage.References(conn, [_event("first", subscription_id=sub)])  # the cache, filled
        monkeypatch.setitem(usage._SUBSCRIPTION_OWNERS[app.engine], "sub_someone_else", "cus_x")
        refs = usage.References(conn, [_event("a", subscription_id=sub, external_customer_id="acme-42")])
    assert set(refs.by_external) == {"acme-42"} and set(refs.owner) == {sub} and len(refs.customer_ids()) == 1
