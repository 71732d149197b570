"""The multi-row INSERT statements ``sqlite_bulk`` makes: every row once, in order, within the parameter limit."""

import pytest

from remit.adapters.db.sqlite_bulk import insert_statements


def _rows(n: int, width: int) -> list[tuple[int, ...]]:
    return [tuple(i * width + j for j in range(width)) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (0, []),
        (1, [1]),
        (256, [256]),
        (257, [256, 1]),
        (1000, [256, 256, 256, 128, 64, 32, 8]),  # the remainder in decreasing powers of two
    ],
)
def test_rows_go_in_power_of_two_statements_in_order(n: int, sizes: list[int]) -> None:
    rows = _rows(n, 3)
    statements = list(insert_statements("INSERT INTO t (a, b, c) VALUES", 3, rows, 250_000))
    assert [len(params) // 3 for _sql, params in statements] == sizes
    assert [v for _sql, params in statements for v in params] == [v for row in rows for v in row]
    for sql, params in statements:
        assert sql.startswith("INSERT INTO t (a, b, c) VALUES (?, ?, ?)")
        assert sql.count("?") == len(params)


def test_no_statement_binds_more_than_the_limit() -> None:
    statements = list(insert_statements("INSERT INTO t VALUES", 4, _rows(7, 4), 9))
    assert [len(params) for _sql, params in statements] == [8, 8, 8, 4]  # two rows of four at most


def test_a_row_wider_than_the_limit_still_goes_alone() -> None:
    """SQLite then refuses it with its own error; the statements do not silently drop it."""
    statements = list(insert_statements("INSERT INTO t VALUES", 4, _rows(2, 4), 3))
    assert [len(params) for _sql, params in statements] == [4, 4]


def test_a_tail_follows_the_rows_and_per_statement_caps_them() -> None:
    tail = " ON CONFLICT DO NOTHING RETURNING a"
    statements = list(
        insert_statements("INSERT INTO t (a) VALUES", 1, _rows(1000, 1), 250_000, tail=tail, per_statement=600)
    )
    assert [len(params) for _sql, params in statements] == [512, 256, 128, 64, 32, 8]
    assert all(sql.endswith("(?)" + tail) for sql, _params in statements)
