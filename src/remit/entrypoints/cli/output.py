"""How the CLI prints: JSON for scripts, Rich tables for people, and one place that maps errors to exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from remit.adapters import fastjson
from remit.domain.clock import ensure_utc
from remit.domain.errors import ErrorKind, RemitError, ValidationError
from remit.service_layer.views import plain

EXIT_CODES = {ErrorKind.INVALID: 2, ErrorKind.NOT_FOUND: 3, ErrorKind.CONFLICT: 4, ErrorKind.FORBIDDEN: 5}
console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print a RemitError for people (or as JSON with --json) and exit with its code; nothing else is caught."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RemitError as exc:
            if kwargs.get("as_json"):
                print(json.dumps({"error": exc.to_dict()}), file=sys.stderr)
            else:
                where = f" (field: {exc.field})" if exc.field else ""
                err_console.print(f"[bold red]Error[/] {escape(f'[{exc.code}] {exc.message}{where}')}")
            raise typer.Exit(EXIT_CODES[exc.kind]) from None

    return wrapper


def print_json(data: Any) -> None:
    # fastjson.Number (a usage event's stored property) is written as the number it is, digit for digit.
    print(fastjson.dumps_numbers(plain(data), indent=2))


def cell(value: Any) -> str:
    """A value as a table shows it: mappings as ``key=value, ...``, lists as ``a, b``, nothing as blank."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    return str(value)


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    table = Table(title=Text(title, style="table.title"))  # as Text: data is shown as it is, never read as markup
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[Text(cell(row.get(c))) for c in columns])
    console.print(table)


def show(data: Any, as_json: bool, title: str = "", columns: Sequence[str] | None = None) -> None:
    if as_json:
        print_json(data)
    elif isinstance(data, list):
        print_table(title, data, columns or (list(data[0].keys()) if data else []))
    else:
        table = Table(title=Text(title, style="table.title"), show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in data.items():
            if isinstance(value, list):
                continue
            table.add_row(Text(key), Text(cell(value)))
        console.print(table)


MAX_PAGE = 1000  # rows per page, as the API's listings


def page_size(limit: int, field: str = "limit") -> int:
    """A ``--limit``: rows per page, 1 to 1000; anything else is an ``invalid_limit`` error on ``field``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError("invalid_limit", f"--limit is a number of rows from 1 to {MAX_PAGE}, not {limit}.", field)
    return limit


def parse_date(value: str | None, field: str) -> date | None:
    """A day given as YYYY-MM-DD, or None; anything else is an ``invalid_date`` error on ``field``."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError("invalid_date", f"{value!r} is not a date (YYYY-MM-DD).", field) from None


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; none means UTC), or None; anything else is an ``invalid_time``
    error on ``field``."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError("invalid_time", f"{value!r} is not an ISO 8601 time.", field) from None
    return ensure_utc(parsed)


def all_pages(fetch: Any, limit: int, every: bool, key: str = "id") -> list[dict[str, Any]]:
    """A list command's rows: one page of ``limit`` rows (1 to 1000: ``invalid_limit`` otherwise), or (``every``)
    all of them, read in pages of 1000, each after the last row's ``key``. ``fetch(n, after)`` reads a page."""
    if not every:
        return list(fetch(page_size(limit), None))[:limit]  # the service reads one more, to know if there are more
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page = fetch(MAX_PAGE, after)
        rows.extend(page)
        if len(page) < MAX_PAGE:
            return rows
        after = page[-1][key]
