"""`remit meters ...`, `remit events import FILE` and `remit events cancel`: usage metering from the command line."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, BinaryIO, cast

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from remit.adapters import fastjson
from remit.adapters.db import tables as t
from remit.bootstrap import Settings, bootstrap
from remit.domain.errors import RemitError, ValidationError
from remit.entrypoints.cli.output import console, handle_errors, show
from remit.service_layer import meters, usage, usage_cancellation, usage_import

meters_app = typer.Typer(help="Meters: what usage is measured and how it is aggregated.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
MAX_GRACE_DAYS = 36_500  # a backfill reaches back at most 100 years
BASE_COLUMNS = ("customer_id", "external_customer_id", "subscription_id", "code", "transaction_id", "timestamp")


@meters_app.command("create")
@handle_errors
def meters_create(
    code: Annotated[str, typer.Option()],
    aggregation: Annotated[str, typer.Option(help="count, sum, max, unique_count, latest, weighted_sum")],
    name: Annotated[str, typer.Option()] = "",
    field: Annotated[str | None, typer.Option(help="The property to aggregate.")] = None,
    expression: Annotated[
        str | None, typer.Option(help="Instead of --field: a formula over the properties, e.g. 'a * 2 + b'.")
    ] = None,
    group_by: Annotated[list[str] | None, typer.Option("--group-by", help="A dimension; repeat for several.")] = None,
    filters: Annotated[str | None, typer.Option(help='JSON: {"region": ["eu", "us"]}')] = None,
    rounding: Annotated[
        str | None, typer.Option(help="Round each period's quantity before pricing: ceil, floor or round.")
    ] = None,
    rounding_precision: Annotated[
        int, typer.Option("--rounding-precision", help="Decimals kept (negative: tens, hundreds...).")
    ] = 0,
    carry_over: Annotated[
        bool,
        typer.Option(
            "--carry-over", help="latest only: a period without events takes the last value reported before it."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    try:
        parsed = json.loads(filters) if filters else {}
    except json.JSONDecodeError as exc:
        raise ValidationError("invalid_json", f"--filters is not valid JSON: {exc.msg}.", "filters") from None
    with bootstrap(Settings()).uow() as uow:
        meter_id = usage.create_meter(
            uow,
            code,
            name or code,
            aggregation,
            field,
            parsed,
            group_by or [],
            expression,
            rounding,
            rounding_precision,
            carry_over,
        )
    show({"id": meter_id, "code": code}, as_json, "Meter created")


@meters_app.command("list")
@handle_errors
def meters_list(as_json: Json = False) -> None:
    """Every meter: its code, aggregation, field or formula, filters, group-by dimensions and rounding."""
    with bootstrap(Settings()).uow(read_only=True) as uow:
        rows = [dict(r) for r in uow.conn.execute(select(t.meters).order_by(t.meters.c.code)).mappings()]
    columns = [
        "code",
        "name",
        "aggregation",
        "field",
        "expression",
        "filters",
        "group_by",
        "rounding",
        "carry_over",
        "deactivated_at",
    ]
    show(rows, as_json, "Meters", columns)


@meters_app.command("rename")
@handle_errors
def meters_rename(code: str, name: Annotated[str, typer.Option()], as_json: Json = False) -> None:
    """Rename a meter (what it measures never changes: create another meter to measure differently)."""
    with bootstrap(Settings()).uow() as uow:
        row = meters.rename_meter(uow, code, name)
    show(row, as_json, "Meter renamed")


@meters_app.command("deactivate")
@handle_errors
def meters_deactivate(code: str, as_json: Json = False) -> None:
    """Refuse the meter's new events and new prices; the events it has are still billed."""
    with bootstrap(Settings()).uow() as uow:
        row = meters.deactivate_meter(uow, code)
    show(row, as_json, "Meter deactivated")


@meters_app.command("reactivate")
@handle_errors
def meters_reactivate(code: str, as_json: Json = False) -> None:
    """Take the meter's events again."""
    with bootstrap(Settings()).uow() as uow:
        row = meters.reactivate_meter(uow, code)
    show(row, as_json, "Meter reactivated")


def _readable(path: Path) -> Path:
    """The file, or a clear error (``file_not_found``, exit 2, as JSON with ``--json``) when it is missing, a folder
    or cannot be read: Typer's own check would answer in plain text whatever ``--json`` says."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValidationError("file_not_found", f"{path} {what}.", "file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValidationError("file_not_found", f"{path} cannot be read: {exc.strerror}.", "file") from None
    return path


def _read(path: Path) -> Iterator[tuple[int, Any]]:
    """Events from CSV (extra columns become properties) or JSON lines, with their line numbers; in place of an
    event, None (a line that is not JSON) or the error that refuses it."""
    _readable(path)
    if _is_csv(path):
        header = _csv_header(path)
        _require_columns(header)
        return (
            (line_no, row if isinstance(row, RemitError) else _csv_event(row))
            for line_no, row in _csv_rows(path, header)
        )
    return _json_lines(path)


GZIP_MAGIC = b"\x1f\x8b"


def _is_csv(path: Path) -> bool:
    """CSV by its name, ``.csv`` (or ``.csv.gz``); JSON lines otherwise."""
    name = path.name.lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


class _Gzip(gzip.GzipFile):
    """A gzip file whose damage (cut short, corrupt) is a clear error rather than a traceback; the chunks stored
    before it stay stored, as after any interruption, and importing the repaired file again stores only the rest."""

    def read(self, size: int | None = -1) -> bytes:
        return _intact(super().read, size)

    def read1(self, size: int = -1) -> bytes:
        return _intact(super().read1, size)

    def readline(self, size: int | None = -1) -> bytes:
        return _intact(super().readline, size)


def _intact(read: Callable[[Any], bytes], size: Any) -> bytes:
    try:
        return read(size)
    except (EOFError, OSError, zlib.error):
        raise ValidationError(
            "invalid_file", "The file is not valid gzip: it is cut short or corrupt.", "file"
        ) from None


def _open(path: Path) -> BinaryIO:
    """The file's bytes; a gzip-compressed one (known by its first bytes, whatever its name) decompressed."""
    with path.open("rb") as fh:
        compressed = fh.read(2) == GZIP_MAGIC
    return cast(BinaryIO, _Gzip(path, "rb")) if compressed else path.open("rb")


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    with _open(path) as fh:  # each line decoded on its own: one that is not UTF-8 is that line's error
        for line_no, line in enumerate(fh, start=1):
            if line_no == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if line.strip():
                try:
                    yield line_no, fastjson.loads_events(line)
                except ValueError:  # not JSON, not UTF-8, or nested too deeply
                    yield line_no, None


def _csv_event(row: dict[str, str | None]) -> dict[str, Any] | RemitError:
    # An empty cell (or one a short row lacks) is no value: the property is left out, as a base column is, rather
    # than stored as "" (which a unique count would count and a group-by would bill as a group of its own).
    props: dict[str, Any] = {k: v for k, v in row.items() if k not in BASE_COLUMNS and v}
    if "properties" in props:
        try:
            extra = fastjson.loads_exact(props.pop("properties") or "{}")
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            return ValidationError("invalid_json", "The properties column is not a JSON object.", "properties")
        props = {**extra, **props}
    event = {k: v for k in BASE_COLUMNS if (v := row.get(k))}
    return {**event, "properties": props}


def _require_columns(header: list[str]) -> None:
    """An import file's header names every column an event needs; else the file is refused before any row is read
    (each of its rows would be refused: a misspelled ``transaction_id`` column is a property, not the id)."""
    missing = [name for name in ("code", "transaction_id", "timestamp") if name not in header]
    if not {"customer_id", "external_customer_id", "subscription_id"} & set(header):
        missing.insert(0, "customer_id (or external_customer_id, or subscription_id)")
    if missing:
        raise ValidationError("invalid_csv", f"The header has no column {', '.join(missing)}.", "file")


def _csv_header(path: Path) -> list[str]:
    """The CSV file's column names; a file that repeats one is refused (which of its values would count?)."""
    with io.TextIOWrapper(_open(path), newline="", encoding="utf-8-sig", errors="replace") as fh:
        try:
            header = next(csv.reader(fh, strict=True), [])
        except csv.Error as exc:
            raise ValidationError("invalid_csv", f"The header is not valid CSV ({exc}).", "file") from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValidationError(
            "invalid_csv", f"The header names a column more than once: {', '.join(repeated)}.", "file"
        )
    return header


def _csv_problem(exc: csv.Error, line_no: int, last: int) -> str:
    """What is wrong with a row the csv module could not read, for people."""
    if "end of data" in str(exc):
        return f"A quoted field is never closed: it runs from line {line_no} to the end of the file (line {last})."
    if "field limit" in str(exc):
        return f"A field is longer than {csv.field_size_limit():,} characters."
    return f'The row is not valid CSV ({exc}): a quote inside a quoted field is written twice, as "".'


def _csv_rows(path: Path, header: list[str]) -> Iterator[tuple[int, dict[str, str | None] | RemitError]]:
    """The rows after the header, each with the line it starts on (blank lines and line breaks inside quoted fields
    counted), as {column: value} (None for a column the row is too short for), or the error that refuses it."""
    bad_lines: list[int] = []

    def lines() -> Iterator[str]:
        with _open(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                if line_no == 1:
                    line = line.removeprefix(codecs.BOM_UTF8)
                try:
                    yield line.decode()
                except UnicodeDecodeError:
                    bad_lines.append(line_no)
                    yield line.decode(errors="replace")

    # Strict: a malformed row is refused on its own (lax parsing would take `"5"0` as 50, or let a quote that is
    # never closed swallow every row after it into one field without a word).
    reader = csv.reader(lines(), strict=True)
    next(reader, None)
    last = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line_no, last = last + 1, reader.line_num
            yield line_no, ValidationError("invalid_csv", _csv_problem(exc, line_no, last), None)
            continue
        line_no, last = last + 1, reader.line_num
        if bad_lines and bad_lines[-1] >= line_no:
            yield line_no, ValidationError("invalid_text", "The line is not valid UTF-8 text.", None)
        elif len(row) > len(header):
            yield (
                line_no,
                ValidationError(
                    "invalid_csv",
                    f"The row has {len(row)} fields, the header {len(header)} (a decimal comma not in quotes?).",
                    None,
                ),
            )
        elif row:
            yield line_no, {**dict.fromkeys(header), **dict(zip(header, row, strict=False))}


def import_events(
    file: Annotated[Path, typer.Argument(help="A .csv or .jsonl file (or .csv.gz, .jsonl.gz).")],
    grace_days: Annotated[
        int | None,
        typer.Option(
            "--grace-days",
            min=0,
            max=MAX_GRACE_DAYS,
            help="Accept events up to this many days old (default: as the API, 7 unless "
            "REMIT_USAGE_GRACE_DAYS says otherwise).",
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, max=200_000, help="Events per transaction.")
    ] = usage_import.CHUNK,
    as_json: Json = False,
) -> None:
    """Import usage events (a backfill). Valid events are kept even when others are refused; duplicates of
    events already received are skipped. Exits with 2 if any event was refused."""
    remit = bootstrap(Settings())
    settings = usage.UsageSettings() if grace_days is None else usage.UsageSettings(grace=timedelta(days=grace_days))
    with Progress(
        TextColumn("Importing"),
        BarColumn(),
        TextColumn("{task.completed} events"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as progress:
        task = progress.add_task("import", total=None)
        result = usage_import.import_events(
            remit.engine,
            remit.clock,
            _read(file),
            settings=settings,
            chunk_size=chunk_size,
            progress=lambda n: progress.update(task, advance=n),
        )
    totals = {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected}
    report = {**totals, "rejected_events": result.rejected_events}
    if as_json:
        show(report, True)
    else:
        show(totals, False, f"Imported {file.name}")
        if result.rejected_events:
            show(
                report["rejected_events"],
                False,
                f"Refused (first {usage_import.MAX_REPORTED})",
                ["line", "transaction_id", "code", "message", "field"],
            )
    if result.rejected:
        raise typer.Exit(2)


import_command = handle_errors(import_events)


def _refs(path: Path) -> Iterator[tuple[int, Any]]:
    """The events a file names, with their line numbers: CSV with columns customer_id (or external_customer_id, or
    subscription_id) and transaction_id, or JSON lines of objects with those keys (other columns and keys are
    ignored, so an import file can be reused)."""
    names = ("customer_id", "external_customer_id", "subscription_id", "transaction_id")
    if _is_csv(path):
        for line_no, row in _csv_rows(path, _csv_header(path)):
            yield line_no, row if isinstance(row, RemitError) else {k: v for k in names if (v := row.get(k))}
        return
    for line_no, item in _read(path):
        yield line_no, {k: item[k] for k in names if k in item} if isinstance(item, dict) else item


def cancel_events(
    transaction_ids: Annotated[
        list[str] | None, typer.Argument(help="Transaction ids of the events to cancel (with --customer).")
    ] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="The customer the events belong to.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Instead: a .csv or .jsonl file naming customer_id and transaction_id on each line.",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with each cancellation).")] = None,
    as_json: Json = False,
) -> None:
    """Cancel usage events sent by mistake: they stop counting, and a period already billed is corrected on the
    next invoice. Events already canceled are reported as such. Exits with 2 if any event was refused."""
    if file is not None and (transaction_ids or customer):
        raise ValidationError("conflicting_options", "Give either --file or --customer with transaction ids.", "file")
    if file is None and (not transaction_ids or not customer):
        raise ValidationError(
            "missing_events", "Name the events: --customer and their transaction ids, or --file.", "transaction_ids"
        )
    remit = bootstrap(Settings())
    if file is not None:
        numbered: Iterator[tuple[int, Any]] = _refs(file)
    else:
        numbered = ((i, {"customer_id": customer, "transaction_id": x}) for i, x in enumerate(transaction_ids or [], 1))
    totals = {"canceled": 0, "already_canceled": 0, "rejected": 0}
    refused: list[dict[str, Any]] = []

    def flush(chunk: list[tuple[int, Any]]) -> None:
        with remit.uow() as uow:
            result = usage_cancellation.cancel_events(uow, [item for _, item in chunk], reason=reason)
        totals["canceled"] += len(result.canceled)
        totals["already_canceled"] += len(result.already_canceled)
        totals["rejected"] += len(result.rejected)
        for r in result.rejected:
            line = chunk[r["index"]][0]
            refused.append(
                {
                    "line" if file is not None else "position": line,
                    "customer_id": r["customer_id"],
                    "transaction_id": r["transaction_id"],
                    **r["error"],
                }
            )

    chunk: list[tuple[int, Any]] = []
    for line_no, item in numbered:
        if item is None or isinstance(item, RemitError):
            error = item.to_dict() if item else {"code": "invalid_json", "message": "Not a JSON object.", "field": None}
            refused.append({"line": line_no, **error})
            totals["rejected"] += 1
            continue
        chunk.append((line_no, item))
        if len(chunk) == usage_cancellation.MAX_BATCH:
            flush(chunk)
            chunk = []
    if chunk:
        flush(chunk)
    if as_json:
        show({**totals, "rejected_events": refused}, True)
    else:
        show(totals, False, "Canceled usage events")
        if refused:
            where = "line" if file is not None else "position"
            show(refused, False, "Refused", [where, "customer_id", "transaction_id", "code", "message"])
    if totals["rejected"]:
        raise typer.Exit(2)


cancel_command = handle_errors(cancel_events)
