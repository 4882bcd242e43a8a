"""The dbt models stay portable SQL: DuckDB-only syntax appears only inside `duckdb__` macros.

Date arithmetic goes through dbt's cross-database macros (dbt.dateadd, dbt.datediff,
dbt.date_trunc, dbt.hash, dbt.type_*), reached through this project's own macros
(add_days, add_months, days_between); anything without a cross-database form is an
`adapter.dispatch` macro with a `duckdb__` and a `default__` body (month_spine), and a
`spark__` body where Spark needs its own (tests/test_spark.py builds the project on Spark).
A static check of the portable part, for engines beyond those two.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"

# DuckDB functions and syntax with no equivalent of the same spelling on Spark SQL, BigQuery,
# Snowflake or PostgreSQL. `(?<!dbt\.)` lets dbt's own cross-database macros through.
DUCKDB_ONLY = {
    "date_diff()": r"(?<!dbt\.)\bdate_?diff\s*\(",
    "date_add()": r"(?<!dbt\.)\bdate_?add\s*\(",
    "date_trunc()": r"(?<!dbt\.)\bdate_trunc\s*\(",
    "interval literal": r"\binterval\b",
    ":: cast": r"::",
    "generate_series/range": r"\b(generate_series|range)\s*\(",
    "list and struct functions": r"\b(list_\w+|struct_pack|unnest)\s*\(",
    "regexp_* functions": r"\bregexp_\w+\s*\(",
    "strftime/strptime/epoch": r"\b(strftime|strptime|epoch\w*)\s*\(",
    "md5()/hash()": r"(?<!dbt\.)\b(md5|hash)\s*\(",
    "group by all / order by all": r"\b(group|order)\s+by\s+all\b",
    "qualify": r"\bqualify\b",
    "columns(*) / exclude": r"\b(columns|exclude)\s*\(",
    "file readers": r"\bread_(parquet|csv|json)\w*\s*\(",
    "double-quoted window": r'"window"',
}
# Engine-specific bodies (`duckdb__`, `spark__`) are dispatched only on their own engine.
DUCKDB_MACRO = re.compile(r"{%-?\s*macro\s+(duckdb|spark)__.*?{%-?\s*endmacro\s*-?%}", re.S)
COMMENT = re.compile(r"{#.*?#}|--[^\n]*", re.S)
JINJA_STATEMENT = re.compile(r"{%.*?%}", re.S)  # template code, not SQL: `range()` is Jinja's


def portable_text(path: Path) -> str:
    """The SQL of a file, without comments, engine-specific macro bodies or Jinja statements."""
    return JINJA_STATEMENT.sub("", DUCKDB_MACRO.sub("", COMMENT.sub("", path.read_text())))


SQL_FILES = sorted(
    p for folder in ("models", "macros", "tests") for p in (PROJECT / folder).rglob("*.sql")
)


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_no_duckdb_only_sql_outside_dispatched_macros(path):
    text = portable_text(path)
    found = [name for name, pattern in DUCKDB_ONLY.items() if re.search(pattern, text, re.I)]
    assert found == [], f"{path.name} uses {found}: use a dbt cross-database macro or dispatch"


def test_the_check_finds_duckdb_syntax_where_it_is_and_not_in_its_dispatched_body():
    # month_spine's duckdb__ body uses generate_series and an interval; its default__ body
    # uses only dbt's macros, so the file passes once the duckdb__ body is set aside.
    raw = (PROJECT / "macros" / "month_spine.sql").read_text()
    assert re.search(DUCKDB_ONLY["generate_series/range"], raw)
    assert not re.search(
        DUCKDB_ONLY["generate_series/range"], portable_text(PROJECT / "macros" / "month_spine.sql")
    )
    assert len(SQL_FILES) > 30  # models, macros and generic tests were all found
