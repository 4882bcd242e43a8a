"""DuckDB behaviour the project works around, held by a test so that a DuckDB upgrade that
changes it is noticed (and the workaround can go)."""

from __future__ import annotations

import duckdb

ROWS = 300_000  # more than two row groups (DuckDB's are 122,880 rows)


def _filled(con: duckdb.DuckDBPyConnection, create: str) -> int:
    """Create t, fill it from another table in one transaction; rows a filter then finds."""
    con.execute("begin")
    con.execute(create)
    con.execute("insert into t select * from source")
    con.execute("commit")
    return con.execute("select count(*) from t where practice_id = 'P00001'").fetchone()[0]


def test_a_table_created_empty_by_ctas_and_filled_in_one_transaction_loses_its_rows_to_filters(
    tmp_path,
):
    """DuckDB 2.0: `create table t as select ... limit 0`, then `insert into t select ...`
    from another table, in one transaction: a filter on t then finds nothing, whatever is
    in it. The practice_batched materialization creates its table from explicit columns."""
    con = duckdb.connect(str(tmp_path / "ctas.duckdb"))
    con.execute(
        f"create table source as select 'P' || lpad((i // 4000)::varchar, 5, '0') "
        f"as practice_id, i as n from range({ROWS}) r(i)"
    )
    con.execute("checkpoint")
    assert _filled(con, "create or replace table t as select * from source limit 0") == 0
    assert con.execute("select count(*) from t").fetchone()[0] == ROWS  # the rows are there
    assert _filled(con, "create or replace table t (practice_id varchar, n bigint)") == 4000
