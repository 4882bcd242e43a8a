"""Direct identifiers must never enter the warehouse: find columns that look like them.

Checked on every staged file before any row is checked or quarantined, because the
quarantine keeps rows too: a delivery with a column of NHS numbers, postcodes or full dates
of birth is refused whole, with the file, column and rule named.

- NHS number: 10 digits (optionally spaced 3-3-4) whose modulus-11 check digit is right.
  Random 10-digit pseudonyms pass the check about one time in eleven, so a column is flagged
  when at least half its values are valid NHS numbers, or any value is written in the
  spaced NHS form.
- Postcode: the UK postcode shape (e.g. `SW1A 1AA`, `M1 1AE`); flagged when at least half the
  values match, or any value has the spaced form.
- Full date of birth: `year_of_birth` holding dates instead of years.
"""

from __future__ import annotations

import duckdb

from .contract import TableSpec

NHS_DIGITS = "regexp_replace({v}, '[ -]', '', 'g')"
NHS_SHAPE = r"^[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}$"
NHS_SPACED = r"^[0-9]{3} [0-9]{3} [0-9]{4}$"
POSTCODE_SHAPE = r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}$"
POSTCODE_SPACED = r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? [0-9][A-Za-z]{2}$"
DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$|^[0-9]{2}/[0-9]{2}/[0-9]{4}$"
FLAG_SHARE = 0.5


def nhs_number_valid_sql(value: str) -> str:
    """SQL true when `value` is a 10-digit NHS number with a correct modulus-11 check digit.

    The arithmetic sits behind a CASE so that it runs only on values of the right shape.
    """
    digits = NHS_DIGITS.format(v=value)
    weighted = " + ".join(f"{11 - i} * try_cast(substr({digits}, {i}, 1) as integer)"
                          for i in range(1, 10))
    check = f"(11 - (({weighted}) % 11)) % 11"
    return (f"(case when regexp_full_match({value}, '{NHS_SHAPE}') then {check} <> 10 "
            f"and {check} = try_cast(substr({digits}, 10, 1) as integer) else false end)")


def is_nhs_number(value: str) -> bool:
    """Python twin of `nhs_number_valid_sql`, for tests and messages."""
    digits = value.replace(" ", "").replace("-", "")
    if len(digits) != 10 or not digits.isdigit():
        return False
    check = (11 - sum((10 - i) * int(d) for i, d in enumerate(digits[:9])) % 11) % 11
    return check != 10 and check == int(digits[9])


def identifier_problems(con: duckdb.DuckDBPyConnection, staged: str,
                        spec: TableSpec) -> list[tuple[str, str]]:
    """(column, rule and evidence) for each column of a staged table that holds identifiers.

    One pass over the table counts every column's suspicious values at once.
    """
    measures, columns = [], [c.name for c in spec.columns if c.kind != "date"]
    for name in columns:
        measures += [
            f"count(*) filter (where {nhs_number_valid_sql(name)})",
            f"count(*) filter (where regexp_full_match({name}, '{NHS_SPACED}') "
            f"and {nhs_number_valid_sql(name)})",
            f"count(*) filter (where regexp_full_match({name}, '{POSTCODE_SHAPE}'))",
            f"count(*) filter (where regexp_full_match({name}, '{POSTCODE_SPACED}'))",
            f"count({name})"]
    if "year_of_birth" in columns:
        measures.append(f"count(*) filter (where regexp_full_match(year_of_birth, "
                        f"'{DATE_SHAPE}'))")
    counts = con.execute(f"select {', '.join(measures)} from {staged}").fetchone()
    problems = []
    for i, name in enumerate(columns):
        nhs, nhs_spaced, postcode, postcode_spaced, filled = counts[5 * i: 5 * i + 5]
        if nhs_spaced or (filled and nhs / filled >= FLAG_SHARE):
            problems.append((name, f"nhs_number: {nhs} of {filled} values pass the NHS "
                                   "number modulus-11 check"))
        elif postcode_spaced or (filled and postcode / filled >= FLAG_SHARE):
            problems.append((name, f"postcode: {postcode} of {filled} values look like "
                                   "UK postcodes"))
    if "year_of_birth" in columns and counts[-1]:
        problems.append(("year_of_birth", f"date_of_birth: {counts[-1]} values are full "
                                          "dates, not years"))
    return problems
