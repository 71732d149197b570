"""A small, safe expression language for dynamic prices: formulas over an event's properties.

    tokens_in * 0.000003 + tokens_out * 0.000015
    max(0, duration_s - 60) * 0.002
    amount * 1.15 if region == "eu" else amount * 1.10

It is parsed with Python's own parser into an AST and evaluated by this module, node by node, in exact decimal
arithmetic. Only these forms exist: numbers, strings, property names, + - * / // %, unary -, comparisons,
and/or/not, `x if cond else y`, and the functions min, max, abs, round (to a whole number of places from -34 to
34), ceil, floor. No attribute access, no indexing, no calls to anything else, no `eval`, no loops: a formula
cannot reach Python, and its cost is bounded by its size, which is limited, and by the size of its numbers: a
constant or property is finite and below 10^64 (no value above that could be stored), so no operation works on a
number of a million digits.

Numbers are exact: a constant is read from its digits in the source (never through a float), a property from its
text. Arithmetic carries 34 significant digits (half to even beyond them): exact for numbers as events write them,
and a quotient that does not end (1 / 3) keeps more digits than the 28 a period's quantity is written with, so a
period of thirds still sums to the whole.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from remit.domain.errors import ValidationError

MAX_LENGTH = 500
MAX_NODES = 200
MAX_DIGITS = 64  # digits before the point of a constant or property: a stored value has at most 64 characters
PRECISION = 34  # significant digits of a result that does not end (a quotient); see the module's docstring
MAX_PLACES = PRECISION  # round(x, places): no more decimals (or tens) than the digits arithmetic carries
Value = Decimal | str | bool

_BINARY: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_COMPARE: dict[type[ast.cmpop], Callable[[Value, Value], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,  # type: ignore[operator]
    ast.LtE: lambda a, b: a <= b,  # type: ignore[operator]
    ast.Gt: lambda a, b: a > b,  # type: ignore[operator]
    ast.GtE: lambda a, b: a >= b,  # type: ignore[operator]
}


def _round(value: Decimal, places: Decimal = Decimal(0)) -> Decimal:
    """Half up to ``places`` decimals (negative: to tens, hundreds...); ``places`` is checked by ``_places_ok``."""
    return value.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP)


def _places_ok(places: Decimal) -> bool:
    """round()'s places: a whole number from -MAX_PLACES to MAX_PLACES (2.5 was cut to 2 without a word)."""
    return places == places.to_integral_value() and -MAX_PLACES <= places <= MAX_PLACES


def _places_error(places: object) -> str:
    return f"round() takes a whole number of places from -{MAX_PLACES} to {MAX_PLACES}, not {places}."


def _integral(value: Decimal, rounding: str) -> Decimal:
    out = value.to_integral_value(rounding)  # cheap at any size, where math.ceil would build the whole int
    return out if out else abs(out)  # 0, not -0


_FUNCTIONS: dict[str, Callable[..., Decimal]] = {
    "min": lambda *a: min(a),
    "max": lambda *a: max(a),
    "abs": lambda a: abs(a),
    "round": _round,
    "ceil": lambda a: _integral(a, ROUND_CEILING),
    "floor": lambda a: _integral(a, ROUND_FLOOR),
}
# How many arguments each function takes, at least and at most (checked when the formula is parsed).
_ARITY: dict[str, tuple[int, int]] = {
    "min": (1, MAX_NODES),
    "max": (1, MAX_NODES),
    "abs": (1, 1),
    "round": (1, 2),
    "ceil": (1, 1),
    "floor": (1, 1),
}
assert _ARITY.keys() == _FUNCTIONS.keys()
_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Name,
    ast.Constant,
    ast.Load,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)


@dataclass(frozen=True, slots=True)
class Formula:
    source: str
    tree: ast.Expression
    names: frozenset[str]

    def evaluate(self, properties: Mapping[str, object], field: str = "formula") -> Decimal:
        """The formula's value for one event. Missing or non-numeric properties are clear errors."""
        with localcontext() as ctx:
            ctx.prec = PRECISION
            try:
                result = _eval(self.tree.body, properties, field)
            except (InvalidOperation, ZeroDivisionError, ArithmeticError):
                raise ValidationError(
                    "formula_arithmetic",
                    f"The formula {self.source!r} cannot be computed for this event (division by zero or overflow).",
                    field,
                ) from None
        if not isinstance(result, Decimal) or isinstance(result, bool) or not result.is_finite():
            raise ValidationError("formula_not_numeric", f"The formula {self.source!r} does not give a number.", field)
        return result


def parse_formula(source: str, field: str = "formula", *, stored: bool = False) -> Formula:
    """The formula, checked. ``stored``: one read back from a meter created before the checks of arguments and
    of the size of constants existed; those are then left to each event (as errors of that event), because a
    meter must load with whatever it was created with."""
    if not isinstance(source, str) or not source.strip():
        raise ValidationError("invalid_formula", "A formula is needed.", field)
    if len(source) > MAX_LENGTH:
        raise ValidationError("invalid_formula", f"A formula is at most {MAX_LENGTH} characters.", field)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValidationError("invalid_formula", f"The formula does not parse: {exc.msg}.", field) from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ValidationError("invalid_formula", "The formula is too complex.", field)
    names: set[str] = set()
    for node in nodes:
        if not isinstance(node, _ALLOWED):
            raise ValidationError("invalid_formula", f"{type(node).__name__} is not allowed in a formula.", field)
        if isinstance(node, ast.BinOp) and type(node.op) not in _BINARY:
            raise ValidationError("invalid_formula", f"{type(node.op).__name__} is not allowed in a formula.", field)
        if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            raise ValidationError("invalid_formula", f"{type(node.op).__name__} is not allowed in a formula.", field)
        if isinstance(node, ast.Compare) and any(type(op) not in _COMPARE for op in node.ops):
            raise ValidationError("invalid_formula", "Only ==, !=, <, <=, > and >= compare values.", field)
        if isinstance(node, ast.Constant):
            _constant(node, source.strip(), field, stored)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise ValidationError(
                    "invalid_formula", "Only min, max, abs, round, ceil and floor may be called.", field
                )
            low, high = _ARITY[node.func.id]
            if not stored and not low <= len(node.args) <= high:
                expected = (
                    "1 argument" if high == 1 else f"{low} to {high} arguments" if high < MAX_NODES else "arguments"
                )
                raise ValidationError(
                    "invalid_formula", f"{node.func.id}() takes {expected}, not {len(node.args)}.", field
                )
        elif isinstance(node, ast.Name) and node.id not in _FUNCTIONS:
            names.add(node.id)
    if not stored and _kind(tree.body, field) in (_TEXT, _TRUTH):
        raise ValidationError(
            "invalid_formula",
            "The formula gives text or true/false, never a number: every event would be refused.",
            field,
        )
    return Formula(source.strip(), tree, frozenset(names))


# What a part of a formula gives, as far as can be told before any event: a number, text, true/false, or (a
# property, or a choice between two kinds) any of them.
_NUMBER, _TEXT, _TRUTH, _ANY = "a number", "text", "true/false", "any"


def _kind(node: ast.expr, field: str) -> str:
    """The kind of value ``node`` gives; refuses (``invalid_formula``) what no event could compute: arithmetic or
    a function on text or true/false, text ordered against a number. The checks ``_eval`` makes, done once."""
    if isinstance(node, ast.Constant):
        return _TRUTH if isinstance(node.value, bool) else _TEXT if isinstance(node.value, str) else _NUMBER
    if isinstance(node, ast.Name):
        return _ANY
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _kind(value, field)
        return _TRUTH
    if isinstance(node, ast.UnaryOp):
        operand = _kind(node.operand, field)
        if isinstance(node.op, ast.Not):
            return _TRUTH
        _numeric(operand, field)
        return _NUMBER
    if isinstance(node, ast.BinOp):
        _numeric(_kind(node.left, field), field)
        _numeric(_kind(node.right, field), field)
        return _NUMBER
    if isinstance(node, ast.Call):
        for arg in node.args:
            _numeric(_kind(arg, field), field)
        if isinstance(node.func, ast.Name) and node.func.id == "round" and len(node.args) == 2:
            places = _literal(node.args[1])
            if places is not None and not _places_ok(places):
                raise ValidationError("invalid_formula", _places_error(places), field)
        return _NUMBER
    if isinstance(node, ast.Compare):
        kinds = [_kind(node.left, field), *(_kind(c, field) for c in node.comparators)]
        for op, left, right in zip(node.ops, kinds, kinds[1:], strict=False):
            if isinstance(op, _ORDERING) and _ANY not in (left, right) and (left == _TEXT) != (right == _TEXT):
                ordered = "a number compares with a number, text with text"
                raise ValidationError("invalid_formula", f"{left} and {right} cannot be ordered: {ordered}.", field)
        return _TRUTH
    if isinstance(node, ast.IfExp):
        _kind(node.test, field)
        body, orelse = _kind(node.body, field), _kind(node.orelse, field)
        return body if body == orelse else _ANY
    return _ANY  # not reached: parse_formula allows nothing else


def _literal(node: ast.expr) -> Decimal | None:
    """The number a constant (``2.5``, ``-1``) stands for; ``None`` for anything else (known only per event)."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, Decimal):
        return node.value if sign > 0 else -node.value
    return None


def _numeric(kind: str, field: str) -> None:
    if kind in (_TEXT, _TRUTH):
        raise ValidationError("invalid_formula", f"Arithmetic needs numbers, not {kind}.", field)


def _constant(node: ast.Constant, source: str, field: str, stored: bool) -> None:
    """Check a constant and, for a number, put its exact Decimal in the tree: read from its digits in the source,
    since Python's float has already rounded 1.0000000000000000001 to 1.0 and 1e400 to inf."""
    value = node.value
    if isinstance(value, bool | str):
        return
    if not isinstance(value, int | float):
        raise ValidationError("invalid_formula", "Only numbers and strings may appear in a formula.", field)
    text = ast.get_source_segment(source, node) or ""
    try:
        number = Decimal(text) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:  # not expected: Python read it as a float
        raise ValidationError("invalid_formula", f"The number {text!r} cannot be read exactly.", field) from None
    if not stored and not _bounded(number):
        raise ValidationError(
            "invalid_formula", f"The number {text} is too large: at most {MAX_DIGITS} digits before the point.", field
        )
    node.value = number  # type: ignore[assignment]  # the tree is this module's own: _eval reads Decimals


def _bounded(number: Decimal) -> bool:
    """Finite and below 10^MAX_DIGITS in magnitude (``adjusted`` is the exponent of the first digit: cheap)."""
    return number.is_finite() and (not number or number.adjusted() < MAX_DIGITS)


def _number(value: object, name: str, field: str) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float):  # JSON numbers arrive as floats; their shortest repr is what the client sent
        number = Decimal(repr(value))
    elif isinstance(value, str) and _looks_numeric(value):
        number = Decimal(value)
    else:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValidationError("formula_not_numeric", f"Property {name!r} is not a finite number.", field)
    if not _bounded(number):
        raise ValidationError(
            "formula_not_numeric",
            f"Property {name!r} is too large: at most {MAX_DIGITS} digits before the point.",
            field,
        )
    return number


def _eval(node: ast.expr, props: Mapping[str, object], field: str) -> Value:
    if isinstance(node, ast.Constant):
        value = node.value
        assert isinstance(value, Decimal | bool | str), "parse_formula made every number a Decimal"
        return value
    if isinstance(node, ast.Name):
        if node.id not in props:
            raise ValidationError(
                "missing_property", f"The event has no property {node.id!r}, which the formula uses.", field
            )
        raw = props[node.id]
        if isinstance(raw, bool) or (isinstance(raw, str) and not _looks_numeric(raw)):
            return raw
        return _number(raw, node.id, field)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, props, field), _eval(node.right, props, field)
        if not isinstance(left, Decimal) or not isinstance(right, Decimal):
            bad = right if isinstance(left, Decimal) else left
            raise ValidationError("formula_not_numeric", f"Arithmetic needs numbers, not {_shown(bad)}.", field)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, props, field)
        if isinstance(node.op, ast.Not):
            return not operand
        if not isinstance(operand, Decimal):
            raise ValidationError("formula_not_numeric", f"Arithmetic needs numbers, not {_shown(operand)}.", field)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BoolOp):
        values = [bool(_eval(v, props, field)) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, props, field)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, props, field)
            if isinstance(op, _ORDERING) and not _comparable(left, right):
                raise ValidationError(
                    "formula_not_numeric",
                    f"{_shown(left)} and {_shown(right)} cannot be ordered: a number compares with a number, text"
                    " with text.",
                    field,
                )
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        chosen = node.body if _eval(node.test, props, field) else node.orelse
        return _eval(chosen, props, field)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        args = [_eval(a, props, field) for a in node.args]
        if not all(isinstance(a, Decimal) and not isinstance(a, bool) for a in args):
            raise ValidationError("formula_not_numeric", f"{node.func.id}() needs numbers.", field)
        places = args[1] if node.func.id == "round" and len(args) == 2 else None
        if isinstance(places, Decimal) and not _places_ok(places):  # a property, or a stored formula's constant
            raise ValidationError("formula_arithmetic", _places_error(places), field)
        try:
            return _FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError):  # a formula stored before parsing counted them: min() has no value
            raise ValidationError("invalid_formula", f"Wrong number of arguments to {node.func.id}().", field) from None
    raise ValidationError("invalid_formula", "Unsupported expression.", field)  # unreachable: parse checks


def _shown(value: Value) -> str:
    """A value as an error message shows it: a number as written, text quoted and cut short."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    return str(value)


def _comparable(left: Value, right: Value) -> bool:
    """Whether <, <=, > and >= order the two: numbers with numbers, text with text (True and False are 1 and 0)."""
    return isinstance(left, str) == isinstance(right, str)


def _looks_numeric(text: str) -> bool:
    """Text that is a finite number ("12.5"); "NaN" and "Infinity" are text (a name may be "Nan")."""
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False
