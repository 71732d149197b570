"""A usage price's own models per group of its meter's dimensions: which key names which group."""

from decimal import Decimal

from remit.domain.catalog.model import PriceType, Timing, dimension_key, parse_usage_terms
from remit.domain.rating.charge_models import parse_charge_model

LIST = parse_charge_model("per_unit", {"unit_price": "0.01"})


def _terms(dimensions):
    spec = {k: {"model": "per_unit", "config": {"unit_price": v}} for k, v in dimensions.items()}
    terms = parse_usage_terms({"meter": "m", "dimensions": spec}, PriceType.RECURRING, Timing.IN_ARREARS, LIST)
    assert terms is not None
    return terms


def _price(terms, *group):
    return terms.model_for(group, LIST).rate(Decimal(1)).amount


def test_values_joined_with_the_separator_name_a_group_as_before():
    terms = _terms({"eu": "0.02", "eu|gpt-4": "0.03", "us|east": "0.04"})
    assert _price(terms, "eu") == Decimal("0.02")
    assert _price(terms, "eu", "gpt-4") == Decimal("0.03")
    assert _price(terms, "us|east") == Decimal("0.04")  # one dimension: its value may hold "|"
    assert _price(terms, "us") == Decimal("0.01")


def test_groups_whose_values_hold_the_separator_do_not_share_a_price():
    """("x|y", "z") and ("x", "y|z") both looked up "x|y|z"."""
    terms = _terms({"x|y|z": "0.05", '["x|y", "z"]': "0.06", '[ "x" ,"y|z"]': "0.07"})
    assert _price(terms, "x|y", "z") == Decimal("0.06")
    assert _price(terms, "x", "y|z") == Decimal("0.07")
    assert dimension_key(("x|y", "z")) == '["x|y", "z"]'
    assert dimension_key(("eu", "gpt-4")) == "eu|gpt-4"


def test_a_list_without_the_separator_is_the_same_group_as_its_joined_values():
    terms = _terms({'["eu", "gpt-4"]': "0.03", '["us|east"]': "0.04"})
    assert _price(terms, "eu", "gpt-4") == Decimal("0.03")
    assert _price(terms, "us|east") == Decimal("0.04")


def test_a_stored_price_naming_one_group_twice_still_loads_and_its_joined_key_wins():
    """Refused when a plan is made; a price stored before the list form existed (where '["u", "v"]' meant
    nothing) must load as it was billed."""
    terms = _terms({"u|v": "0.02", '["u", "v"]': "0.09"})
    assert _price(terms, "u", "v") == Decimal("0.02")
    terms = _terms({'["u", "v"]': "0.09", "u|v": "0.02"})
    assert _price(terms, "u", "v") == Decimal("0.02")
