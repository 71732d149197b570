"""JSON numbers in usage events are kept exactly as sent: parsed as Decimals where a float would lose digits, and
written back as the same numbers."""

from decimal import Decimal

import pytest

from remit.adapters import fastjson


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("12345678901234567890.5", Decimal("12345678901234567890.5")),
        ("0.30000000000000001", Decimal("0.30000000000000001")),
        ("1e-400", Decimal("1e-400")),
        ("1E400", Decimal("1E400")),
        ("-2.50", Decimal("-2.50")),
    ],
)
def test_a_number_with_a_fraction_or_an_exponent_keeps_its_digits(text, number):
    body = f'{{"t": "2026-01-01T00:00:00.5+01:00", "p": {{"n": {text}, "m": [1, {text}]}}}}'
    parsed = fastjson.loads_exact(body.encode())
    assert parsed["p"] == {"n": number, "m": [1, number]}
    assert str(parsed["p"]["n"]) == str(number)
    assert fastjson.dumps_exact(parsed["p"]) == f'{{"n":{number},"m":[1,{number}]}}'


def test_integers_and_strings_parse_as_before():
    body = b'{"a": 1, "b": "1.5", "c": [18446744073709551616], "d": "2026-01-01T00:00:00.123456Z"}'
    assert fastjson.loads_exact(body) == fastjson.loads(body)
    assert type(fastjson.loads_exact(body)["a"]) is int


def test_decimals_are_written_as_numbers_beside_integers_beyond_64_bits():
    value = {"big": 2**70, "n": Decimal("0.1"), "s": "x"}
    assert fastjson.dumps_exact(value).replace(" ", "") == '{"big":1180591620717411303424,"n":0.1,"s":"x"}'


def test_json_nested_too_deeply_is_a_value_error_not_a_recursion_error():
    with pytest.raises(ValueError):
        fastjson.loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError):
        fastjson.loads_exact(b'{"a": 1.5, "b": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
