"""Compare the marts of two published warehouses (built on different engines), row by row.

Every mart of one must be in the other with the same columns (names, order, types) and the
same rows: EXCEPT ALL both ways on every column but the doubles, and the doubles of rows
paired on those columns equal to `RELATIVE` (two engines may sum floating-point numbers in
a different order; 1e-9 relative is far below any published rounding).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

RELATIVE = 1e-9
FLOATING = ("DOUBLE", "FLOAT", "REAL")


def _columns(con: duckdb.DuckDBPyConnection, database: str, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = ? "
        "and schema_name = 'marts' and table_name = ? order by column_index",
        [database, table],
    ).fetchall()


def _marts(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    return [
        name
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where database_name = ? and schema_name = 'marts' "
            "order by 1",
            [database],
        ).fetchall()
    ]


def compare_marts(
    left: Path, right: Path, relative: float = RELATIVE
) -> tuple[list[str], dict[str, str]]:
    """The marts two warehouse files share, and what differs: {mart: description}, empty
    when every mart is equal."""
    con = duckdb.connect()
    con.execute("attach ? as l (read_only)", [str(left)])
    con.execute("attach ? as r (read_only)", [str(right)])
    differences: dict[str, str] = {}
    left_marts, right_marts = _marts(con, "l"), _marts(con, "r")
    if left_marts != right_marts:
        differences["marts"] = f"{left_marts} != {right_marts}"
    for mart in sorted(set(left_marts) & set(right_marts)):
        columns = _columns(con, "l", mart)
        if columns != _columns(con, "r", mart):
            differences[mart] = f"columns {columns} != {_columns(con, 'r', mart)}"
            continue
        found = _row_differences(con, mart, columns, relative)
        if found:
            differences[mart] = found
    con.close()
    return sorted(set(left_marts) & set(right_marts)), differences


def _row_differences(
    con: duckdb.DuckDBPyConnection, mart: str, columns: list[tuple[str, str]], relative: float
) -> str:
    """Rows in one mart and not the other, or doubles apart by more than `relative`."""
    doubles = [f'"{c}"' for c, kind in columns if kind in FLOATING]
    others = [f'"{c}"' for c, kind in columns if kind not in FLOATING]
    partition = f"partition by {', '.join(others)}" if others else ""
    order = f"order by {', '.join(doubles)}" if doubles else ""
    numbered = (
        'select {cols}, row_number() over ({partition} {order}) as _n from {db}.marts."{mart}"'
    )
    cols = ", ".join(others + doubles)
    left = numbered.format(cols=cols, partition=partition, order=order, db="l", mart=mart)
    right = numbered.format(cols=cols, partition=partition, order=order, db="r", mart=mart)
    keys = ", ".join([*others, "_n"])
    problems = []
    for name, first, second in (
        ("only in the first", left, right),
        ("only in the second", right, left),
    ):
        rows = con.execute(
            f"select {keys} from ({first}) except all select {keys} from ({second}) limit 5"
        ).fetchall()
        if rows:
            problems.append(f"{name}: {rows}")
    if doubles and not problems:
        join = " and ".join(f"a.{c} is not distinct from b.{c}" for c in [*others, "_n"])
        apart = " or ".join(
            f"not (a.{d} is not distinct from b.{d} or abs(a.{d} - b.{d}) "
            f"<= {relative} * greatest(abs(a.{d}), abs(b.{d})))"
            for d in doubles
        )
        rows = con.execute(
            f"select a.*, b.* from ({left}) a join ({right}) b on {join} where {apart} limit 5"
        ).fetchall()
        if rows:
            problems.append(f"doubles apart by more than {relative} relative: {rows}")
    return "; ".join(problems)
