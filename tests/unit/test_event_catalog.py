"""The catalog of domain event types, the code that records them and docs/webhooks.md agree: a type the code can
record is documented (with when and its data), and the docs list no type the code never records. Checked on the
source and the docs, so it cannot rot."""

import ast
import re
from pathlib import Path

import pytest

from remit.domain import event_types
from remit.domain.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "remit"
CATALOG = SRC / "domain" / "event_types.py"
TYPE = re.compile(r"^[a-z_]+\.[a-z_]+$")


def _documented() -> list[str]:
    """The types in the first column of docs/webhooks.md's event tables (`| type | object | when | data |`)."""
    found: list[str] = []
    in_table = False
    for line in (ROOT / "docs" / "webhooks.md").read_text().splitlines():
        if line.startswith("| type | object | when |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if in_table and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 4 and all(cells), f"an event row needs a type, an object, a when and data: {line}"
            found.extend(re.findall(r"`([^`]+)`", cells[0]))
    return found


def _literals_in_source() -> set[str]:
    """Every string constant of the code (but the catalog itself) that reads like an event type."""
    out: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path == CATALOG:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TYPE.match(node.value):
                out.add(node.value)
    return out


def test_every_type_the_code_records_is_documented_once_and_nothing_else():
    documented = _documented()
    assert len(documented) == len(set(documented)), "a type is documented twice"
    assert sorted(set(event_types.EVENT_TYPES) - set(documented)) == [], "recorded but not in docs/webhooks.md"
    assert sorted(set(documented) - set(event_types.EVENT_TYPES)) == [], "in docs/webhooks.md but never recorded"


def test_every_type_of_the_catalog_is_recorded_somewhere_and_every_recorded_type_is_in_it():
    literals = _literals_in_source()
    assert sorted(set(event_types.EVENT_TYPES) - literals) == [], "in the catalog, but no code records it"
    # A literal of a family the catalog knows, absent from the catalog: recording it would fail (UnitOfWork.emit).
    strays = {v for v in literals if v.split(".")[0] in event_types.FAMILIES and v not in event_types.KNOWN}
    assert sorted(strays) == []


def test_recording_a_type_missing_from_the_catalog_fails():
    event_types.check_recorded("invoice.paid")
    with pytest.raises(ValueError, match="invoice.payed"):
        event_types.check_recorded("invoice.payed")


@pytest.mark.parametrize("pattern", [*event_types.EVENT_TYPES, "*", "invoice.*", "wallet.*", "invoice_item.*"])
def test_every_type_family_and_star_is_a_valid_pattern(pattern):
    assert event_types.check_pattern(pattern, "event_types") == pattern


@pytest.mark.parametrize("pattern", ["invoice.payed", "invoice", "invoices.*", "thing.updated", "", "*.*", 3])
def test_an_unknown_pattern_is_refused_with_a_stable_code(pattern):
    with pytest.raises(ValidationError) as caught:
        event_types.check_pattern(pattern, "event_types")
    assert (caught.value.code, caught.value.field) == ("invalid_event_type", "event_types")


def test_a_family_matches_its_own_types_only():
    assert event_types.matches("invoice.*", "invoice.paid")
    assert not event_types.matches("invoice.*", "invoice_item.created")
    assert event_types.matches("*", "wallet.depleted") and not event_types.matches("invoice.paid", "invoice.voided")
