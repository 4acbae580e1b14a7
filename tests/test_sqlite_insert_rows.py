"""``insert_rows``: the store's inserts, many rows to a statement, store what one statement per
row (``executemany``) stores, whatever the number of rows and however the parameters are
written (plain ``?`` or numbered ``?n``, some used twice)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from leadrelay.delivery.sqlite_schema import (
    INSERT,
    INSERT_BODY,
    INSERT_DELIVERED,
    INSERT_QUEUED,
    INSERT_SETTLED,
    init_schema,
    open_connection,
)
from leadrelay.delivery.sqlite_sql import insert_rows


def _rows(sql: str, n: int) -> list[tuple[Any, ...]]:
    """``n`` rows for ``sql``, each value telling its row and column apart (ids from 1), every
    other row with NULL in the last column (nullable in each of these statements but
    ``INSERT_QUEUED``, whose last is ``received_at``)."""
    width = sql.count("?") if "?1" not in sql else 7
    rows = []
    for i in range(1, n + 1):
        values: list[Any] = [i]
        values += [f"r{i}c{c}" if c % 2 else i * 100 + c for c in range(1, width)]
        if i % 2 and sql is not INSERT_QUEUED:
            values[-1] = None
        rows.append(tuple(values))
    return rows


def _table(
    tmp_path: Path,
    name: str,
    sql: str,
    rows: list[tuple[Any, ...]],
    many: bool,
    limit: int | None = None,
) -> Any:
    opened: list[sqlite3.Connection] = []
    path = str(tmp_path / f"{name}.db")
    conn = open_connection(path, 5.0, opened)
    if limit is not None:  # parameters one statement may bind: 999 before SQLite 3.32
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    conn.execute("PRAGMA journal_mode = WAL")
    init_schema(conn, path)
    conn.execute("BEGIN")
    if many:
        conn.executemany(sql, rows)
    else:
        insert_rows(conn, sql, rows)
    conn.execute("COMMIT")
    table = "bodies" if "INTO bodies" in sql else "events"
    stored = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    conn.close()
    return stored


@pytest.mark.parametrize(
    "sql",
    [INSERT_QUEUED, INSERT_DELIVERED, INSERT, INSERT_SETTLED, INSERT_BODY],
    ids=["queued", "delivered", "insert", "settled", "body"],
)
@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 99, 100, 101, 111, 1234])
@pytest.mark.parametrize("limit", [None, 999, 20], ids=["default", "999-parameters", "20"])
def test_stores_what_one_statement_per_row_stores(
    tmp_path: Path, sql: str, n: int, limit: int | None
) -> None:
    rows = _rows(sql, n)
    expected = _table(tmp_path, "one-by-one", sql, rows, many=True)
    assert len(expected) == n
    assert _table(tmp_path, "grouped", sql, rows, many=False, limit=limit) == expected


def test_a_duplicate_key_fails_the_insert_as_executemany_does(tmp_path: Path) -> None:
    rows = _rows(INSERT_DELIVERED, 150)
    rows[120] = (121, *rows[3][1:])  # the key of row 4 again
    with pytest.raises(sqlite3.IntegrityError):
        _table(tmp_path, "dup", INSERT_DELIVERED, rows, many=False)


def test_refuses_what_is_not_an_insert_of_one_row() -> None:
    with pytest.raises(ValueError, match="not an INSERT of one row"):
        insert_rows(sqlite3.connect(":memory:"), "DELETE FROM events WHERE id = ?", [(1,)] * 10)


def test_a_row_without_parameters_is_inserted_as_many_times() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    insert_rows(conn, "INSERT INTO t (x) VALUES (7)", [()] * 123)
    assert conn.execute("SELECT count(*), sum(x) FROM t").fetchone() == (123, 861)
