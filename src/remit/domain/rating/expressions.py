"""A small, safe expression language for dynamic prices: formulas over an event's properties.

    tokens_in * 0.000003 + tokens_out * 0.000015
    max(0, duration_s - 60) * 0.002
    amount * 1.15 if region == "eu" else amount * 1.10

It is parsed with Python's own parser into an AST and evaluated by this module, node by node, in exact decimal
arithmetic. Only these forms exist: numbers, strings, property names, + - * / // %, unary -, comparisons,
and/or/not, `x if cond else y`, and the functions min, max, abs, round, ceil, floor. No attribute access, no
indexing, no calls to anything else, no `eval`, no loops: a formula cannot reach Python, and its cost is bounded
by its size, which is limited.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

from remit.domain.errors import ValidationError

MAX_LENGTH = 500
MAX_NODES = 200
Value = Decimal | str | bool

_BINARY: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Value, Value], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,  # type: ignore[operator]
    ast.LtE: lambda a, b: a <= b,  # type: ignore[operator]
    ast.Gt: lambda a, b: a > b,  # type: ignore[operator]
    ast.GtE: lambda a, b: a >= b,  # type: ignore[operator]
}


def _round(value: Decimal, places: Decimal = Decimal(0)) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP)


_FUNCTIONS: dict[str, Callable[..., Decimal]] = {
    "min": lambda *a: min(a),
    "max": lambda *a: max(a),
    "abs": lambda a: abs(a),
    "round": _round,
    "ceil": lambda a: Decimal(math.ceil(a)),
    "floor": lambda a: Decimal(math.floor(a)),
}
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
            ctx.prec = 34
            try:
                result = _eval(self.tree.body, properties, field)
            except (InvalidOperation, ZeroDivisionError, ArithmeticError):
                raise ValidationError(
                    "formula_arithmetic",
                    f"The formula {self.source!r} cannot be computed for this event (division by zero or overflow).",
                    field,
                ) from None
        if not isinstance(result, Decimal) or isinstance(result, bool):
            raise ValidationError("formula_not_numeric", f"The formula {self.source!r} does not give a number.", field)
        return result


def parse_formula(source: str, field: str = "formula") -> Formula:
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
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | str | bool):
            raise ValidationError("invalid_formula", "Only numbers and strings may appear in a formula.", field)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise ValidationError(
                    "invalid_formula", "Only min, max, abs, round, ceil and floor may be called.", field
                )
        elif isinstance(node, ast.Name) and node.id not in _FUNCTIONS:
            names.add(node.id)
    return Formula(source.strip(), tree, frozenset(names))


def _number(value: object, name: str, field: str) -> Decimal:
    if isinstance(value, bool):
        raise ValidationError("formula_not_numeric", f"Property {name!r} is not a number.", field)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):  # JSON numbers arrive as floats; their shortest repr is what the client sent
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    raise ValidationError("formula_not_numeric", f"Property {name!r} is not a number.", field)


def _eval(node: ast.expr, props: Mapping[str, object], field: str) -> Value:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool | str):
            return value
        if isinstance(value, float):
            return Decimal(repr(value))
        assert isinstance(value, int), "parse_formula admits only numbers and strings"
        return Decimal(value)
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
            raise ValidationError("formula_not_numeric", "Arithmetic needs numbers.", field)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, props, field)
        if isinstance(node.op, ast.Not):
            return not operand
        if not isinstance(operand, Decimal):
            raise ValidationError("formula_not_numeric", "Arithmetic needs numbers.", field)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BoolOp):
        values = [bool(_eval(v, props, field)) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, props, field)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, props, field)
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
        try:
            return _FUNCTIONS[node.func.id](*args)
        except TypeError:
            raise ValidationError("invalid_formula", f"Wrong number of arguments to {node.func.id}().", field) from None
    raise ValidationError("invalid_formula", "Unsupported expression.", field)  # unreachable: parse checks


def _looks_numeric(text: str) -> bool:
    try:
        Decimal(text)
        return True
    except InvalidOperation:
        return False
