"""How the CLI's tables show values."""

from datetime import UTC, datetime
from decimal import Decimal

from remit.entrypoints.cli.output import cell


def test_cells_show_mappings_and_lists_plainly():
    assert cell({"region": "eu", "model": "large"}) == "region=eu, model=large"
    assert cell(["eu", "us"]) == "eu, us"
    assert cell({"fee_types": ["usage", "fixed"], "meters": []}) == "fee_types=usage, fixed, meters="
    assert cell(None) == "" and cell(Decimal("1.50")) == "1.50" and cell(True) == "True"
    assert cell(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
