"""Wallets limited to some fees: what they may pay of an invoice (pure domain)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remit.domain.errors import ValidationError
from remit.domain.wallets import Fee, GrantBalance, WalletScope, consume, consume_scoped, fee_of

AT = datetime(2026, 3, 1, tzinfo=UTC)
PLATFORM = fee_of("subscription", "price_platform", None)
CALLS = fee_of("usage", "price_calls", "calls")
TOKENS = fee_of("usage", "price_tokens", "tokens")
USAGE_ONLY = WalletScope(fee_types=frozenset({"usage"}))


def grant(gid, wallet, minor, priority=1, credits=None):
    return GrantBalance(gid, wallet, priority, AT - timedelta(days=1), None, Decimal(credits or minor), minor)


def taken(result):
    return [(c.grant_id, c.amount_minor) for c in result[0]]


def test_lines_belong_to_fees_by_kind_price_and_meter():
    assert fee_of("proration", "p", None) == fee_of("subscription", "p", None) == Fee("fixed", "", "p")
    assert fee_of("usage_correction", "p", "m") == Fee("usage", "m", "p")
    assert fee_of("true_up", "p", None).fee_type == "commitment"
    assert fee_of("one_off", None, None) == Fee("one_off", "", "")


def test_a_usage_only_wallet_pays_the_usage_share_of_what_is_due():
    # 50.00 platform + 30.00 calls; the customer's balance paid 20.00 of the 80.00: 60.00 is due, shared 37.50 /
    # 22.50. The usage wallet pays the 22.50 of calls; the unlimited one after it pays the rest.
    fees = [(PLATFORM, 5000), (CALLS, 3000)]
    grants = [grant("usage", "w_usage", 10000), grant("any", "w_any", 10000, priority=2)]
    scopes = {"w_usage": USAGE_ONLY, "w_any": None}
    assert taken(consume_scoped(grants, scopes, fees, 6000, AT)) == [("usage", 2250), ("any", 3750)]


def test_a_credit_nets_against_its_own_fee_before_the_shares_are_made():
    # An upgrade's credit of -40.00 on the platform price: the platform fee nets to 10.00, calls stay 30.00.
    fees = [(PLATFORM, 5000), (fee_of("proration", "price_platform", None), -4000), (CALLS, 3000)]
    result = consume_scoped([grant("g", "w", 10000)], {"w": USAGE_ONLY}, fees, 4000, AT)
    assert taken(result) == [("g", 3000)]


def test_limits_by_meter_and_by_price():
    fees = [(PLATFORM, 1000), (CALLS, 1000), (TOKENS, 1000)]
    by_meter = WalletScope(meters=frozenset({"tokens"}))
    by_price = WalletScope(prices=frozenset({"price_platform"}))
    grants = [grant("t", "w_t", 5000), grant("p", "w_p", 5000, priority=2)]
    assert taken(consume_scoped(grants, {"w_t": by_meter, "w_p": by_price}, fees, 3000, AT)) == [
        ("t", 1000),
        ("p", 1000),
    ]


def test_scopes_are_parsed_and_checked():
    assert WalletScope.parse(None) is None
    assert WalletScope.parse({"fee_types": [], "meters": []}) is None  # nothing listed: no limit
    assert WalletScope.parse({"fee_types": ["usage"], "prices": ["p1"]}).public() == {
        "fee_types": ["usage"],
        "meters": [],
        "prices": ["p1"],
    }
    for bad, field in (
        ({"fee_types": ["storage"]}, "applies_to.fee_types"),
        ({"meters": "calls"}, "applies_to.meters"),
        ({"products": ["x"]}, "applies_to"),
        (["usage"], "applies_to"),
    ):
        with pytest.raises(ValidationError) as refused:
            WalletScope.parse(bad)
        assert (refused.value.code, refused.value.field) == ("invalid_value", field)


_FEES = [PLATFORM, CALLS, TOKENS, fee_of("one_off", None, None)]
_SCOPES = [
    None,
    USAGE_ONLY,
    WalletScope(meters=frozenset({"tokens"})),
    WalletScope(prices=frozenset({"price_platform"})),
]


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(-3000, 9000)), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 8000), st.integers(1, 3)), min_size=1, max_size=4),
    st.integers(0, 100),
)
def test_credits_never_pay_more_than_is_due_nor_a_wallet_more_than_its_fees(lines, wallets, percent_due):
    fees = [(_FEES[i], amount) for i, amount in lines]
    nets: dict[Fee, int] = {}
    for fee, amount in fees:
        nets[fee] = nets.get(fee, 0) + amount
    positive = sum(v for v in nets.values() if v > 0)
    due = positive * percent_due // 100 if sum(nets.values()) > 0 else 0
    due = min(due, max(0, sum(nets.values())))
    grants = [grant(f"g{n}", f"w{n}", minor, priority) for n, (_s, minor, priority) in enumerate(wallets)]
    scopes = {f"w{n}": _SCOPES[s] for n, (s, _m, _p) in enumerate(wallets)}
    parts, after = consume_scoped(grants, scopes, fees, due, AT)
    assert sum(p.amount_minor for p in parts) <= due
    for p in parts:
        scope = scopes[p.wallet_id]
        eligible = sum(v for f, v in nets.items() if v > 0 and (scope is None or scope.covers(f)))
        assert p.amount_minor <= eligible
    for g, a in zip(grants, after, strict=True):  # nothing lost: what was taken is what the grant lost
        took = sum(p.amount_minor for p in parts if p.grant_id == g.grant_id)
        assert a.remaining_minor == g.remaining_minor - took >= 0
        assert a.remaining_credits + sum(p.credits for p in parts if p.grant_id == g.grant_id) == g.remaining_credits
    if all(s is None for s in scopes.values()):
        assert taken((parts, after)) == taken(consume(grants, due, AT))
    elif all(s is None or s.covers(f) for s in scopes.values() for f, v in nets.items() if v > 0):
        assert sum(p.amount_minor for p in parts) == min(due, sum(g.remaining_minor for g in grants))
