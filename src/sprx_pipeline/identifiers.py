"""Direct identifiers must never enter the warehouse: find columns that hold them.

Security-sensitive and kept small: named constants, one SQL pass per staged file, and a
pure decision. It runs on every staged file before any row is checked or quarantined,
because the quarantine keeps rows too. A delivery with NHS numbers, postcodes or full dates
of birth in any column is refused whole, with the file, column, count and rule named. Every
column is checked except date columns: ids, codes, values and labels.

**NHS numbers** are 10 digits (optionally spaced 3-3-4) whose modulus-11 check digit is
right. Random 10-digit pseudonyms pass the check about 1 time in 11: the weighted sum of the
first nine digits is close to uniform modulo 11, the check is then 10 (invalid) 1 time in 11,
and otherwise matches the tenth digit 1 time in 10, so 10/11 × 1/10 = 1/11. A column is
refused when, among its distinct NHS-shaped values, the number that pass is improbable for
random digits. The test is a one-sided exact binomial test against 1/11 (`binomial_tail`).
Its level is `NHS_FORMAT_ALPHA` (10⁻⁶) when most of the column is NHS-shaped, where a
practice with random 10-digit pseudonyms must still load, and `OUTLIER_ALPHA` (10⁻³) when
NHS-shaped values stand out from a column of another format. A column is also refused when
at least half its values pass, or when any passing value is in the spaced NHS form (as the
NHS writes it). Distinct values are counted, not rows, because a patient id repeats on
every consultation, and a common 10-digit SNOMED code would otherwise count thousands of
times.

*What the bound catches*: in a column of N random 10-digit pseudonyms, a leak of a share s
of NHS numbers raises the expected passing share from 1/11 to s + (1 - s)/11. With
N = 5,000 the 10⁻⁶ bound is 555 passing values of 5,000, crossed with 50% probability at a
2.2% leak, 95% at 3% and 99.98% at 4%. `tests/test_identifiers.py` shows a 4% leak
refused and a 1% leak not caught. A leak into a column of any other format is caught from
3 values on.

**Postcodes**: the UK postcode shape (e.g. `SW1A 1AA`, `M1 1AE`). A column is refused when
any value has the spaced form, when at least half its values have the shape, or when, for
some length L from 5 to 8 characters, at least 3 values have the shape and they are at least
half of the column's values of that length. That is how a postcode stands out from
pseudonyms of another length or format. Short alphanumeric pseudonyms can look like
postcodes by chance (about 1 in 20 for six random letters and digits), so a column of them
can hide a minority of unspaced postcodes of their own length: a limit of any check on
shape alone.

**Full dates of birth**: `year_of_birth` holding dates instead of years.

>>> is_nhs_number("943 476 5919"), is_nhs_number("9434765918")
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb

from .contract import TableSpec

NHS_PASS_CHANCE = 1 / 11  # random 10 digits passing modulus 11
NHS_FORMAT_ALPHA = 1e-6  # level where the column's own format is 10 digits
OUTLIER_ALPHA = 1e-3  # level where NHS-shaped values are a minority
MAJORITY_SHARE = 0.5
POSTCODE_MIN_COUNT = 3
POSTCODE_LENGTHS = range(5, 9)  # "M11AE" .. "SW1A 1AA"

NHS_SHAPE = r"^[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}$"
NHS_SPACED = r"^[0-9]{3} [0-9]{3} [0-9]{4}$"
POSTCODE_SHAPE = r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}$"
POSTCODE_SPACED = r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? [0-9][A-Za-z]{2}$"
DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$|^[0-9]{2}/[0-9]{2}/[0-9]{4}$"
WHOLE_NUMBER = r"\.0+$"  # a number column's 9434765919.0 is 9434765919


def nhs_number_valid_sql(value: str) -> str:
    """SQL true when `value` is a 10-digit NHS number with a correct modulus-11 check digit.

    The arithmetic sits behind a CASE so that it runs only on values of the right shape.
    """
    digits = f"regexp_replace({value}, '[ -]', '', 'g')"
    weighted = " + ".join(
        f"{11 - i} * cast(substr({digits}, {i}, 1) as integer)" for i in range(1, 10)
    )
    check = f"(11 - (({weighted}) % 11)) % 11"
    return (
        f"(case when regexp_full_match({value}, '{NHS_SHAPE}') then {check} <> 10 "
        f"and {check} = cast(substr({digits}, 10, 1) as integer) else false end)"
    )


def is_nhs_number(value: str) -> bool:
    """Python twin of `nhs_number_valid_sql`, for tests and messages."""
    digits = value.replace(" ", "").replace("-", "")
    if len(digits) != 10 or not digits.isdigit():
        return False
    check = (11 - sum((10 - i) * int(d) for i, d in enumerate(digits[:9])) % 11) % 11
    return check != 10 and check == int(digits[9])


def binomial_tail(successes: int, trials: int, chance: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, chance), exactly (a sum of log terms)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    log_p, log_q = math.log(chance), math.log1p(-chance)
    terms = [
        math.lgamma(trials + 1)
        - math.lgamma(k + 1)
        - math.lgamma(trials - k + 1)
        + k * log_p
        + (trials - k) * log_q
        for k in range(successes, trials + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


@dataclass(frozen=True)
class ColumnCounts:
    """What one SQL pass counts in a column (NHS counts are of distinct values)."""

    filled: int
    nhs_shaped: int
    nhs_valid: int
    nhs_spaced_valid: int
    postcode_shaped: int
    postcode_spaced: int
    by_length: dict[int, tuple[int, int]]  # length -> (postcode-shaped, all values)


def nhs_problem(counts: ColumnCounts) -> str | None:
    """The rule and evidence if a column's NHS-shaped values are NHS numbers, else None."""
    if not counts.filled or not counts.nhs_valid:
        return None
    valid, shaped = counts.nhs_valid, counts.nhs_shaped
    if counts.nhs_spaced_valid:
        return (
            f"nhs_number: {counts.nhs_spaced_valid} values in the spaced NHS number form "
            "pass the modulus-11 check"
        )
    if valid / counts.filled >= MAJORITY_SHARE:
        return f"nhs_number: {valid} of {counts.filled} values pass the NHS number modulus-11 check"
    own_format = shaped / counts.filled >= MAJORITY_SHARE
    alpha = NHS_FORMAT_ALPHA if own_format else OUTLIER_ALPHA
    tail = binomial_tail(valid, shaped, NHS_PASS_CHANCE)
    if tail <= alpha:
        where = (
            "of its 10-digit values"
            if own_format
            else f"NHS-shaped values among {counts.filled} values of another format"
        )
        return (
            f"nhs_number: {valid} of {shaped} distinct {where} pass the modulus-11 check, "
            f"where random digits pass 1 in 11 (binomial P = {tail:.1e} <= {alpha:g})"
        )
    return None


def postcode_problem(counts: ColumnCounts) -> str | None:
    """The rule and evidence if a column holds postcodes, else None."""
    if counts.postcode_spaced:
        return f"postcode: {counts.postcode_spaced} values have the spaced UK postcode form"
    if counts.filled and counts.postcode_shaped / counts.filled >= MAJORITY_SHARE:
        return (
            f"postcode: {counts.postcode_shaped} of {counts.filled} values look like UK postcodes"
        )
    for length, (shaped, total) in sorted(counts.by_length.items()):
        if shaped >= POSTCODE_MIN_COUNT and shaped / total >= MAJORITY_SHARE:
            return (
                f"postcode: {shaped} of the column's {total} values of {length} characters "
                f"look like UK postcodes, unlike the rest of its {counts.filled} values"
            )
    return None


def _as_whole(name: str, kind: str) -> str:
    """A value as the NHS-number checks read it: a number column's 9434765919.0 is 9434765919."""
    if kind != "number":
        return name
    return (
        f"(case when length({name}) between 11 and 30 and contains({name}, '.') "
        f"then regexp_replace({name}, '{WHOLE_NUMBER}', '') else {name} end)"
    )


def _guarded(guard: str, test: str) -> str:
    """`guard and test`, with `test` evaluated only where `guard` holds (an AND in DuckDB
    evaluates both sides of a vector; a CASE only the rows its WHEN selects)."""
    return f"(case when {guard} then {test} else false end)"


def _nhs_shaped(value: str) -> str:
    return _guarded(f"length({value}) in (10, 12)", f"regexp_full_match({value}, '{NHS_SHAPE}')")


def _suspicious(name: str, kind: str) -> str:
    """SQL true for a value that could be an identifier: NHS-shaped, postcode-shaped or in
    the spaced postcode form. The regular expressions run only where a cheap guard on
    length (or a space) lets them, so most values cost one `length()`."""
    return " or ".join(
        [
            _nhs_shaped(_as_whole(name, kind)),
            _guarded(
                f"length({name}) between 5 and 8", f"regexp_full_match({name}, '{POSTCODE_SHAPE}')"
            ),
            _guarded(f"contains({name}, ' ')", f"regexp_full_match({name}, '{POSTCODE_SPACED}')"),
        ]
    )


def _column_counts(
    con: duckdb.DuckDBPyConnection, staged: str, name: str, kind: str, filled: int
) -> ColumnCounts:
    """Every count of one column that has suspicious values: a second look at it alone."""
    value = _as_whole(name, kind)
    nhs = con.execute(
        f"select count(*), count(*) filter (where {nhs_number_valid_sql('v')}), "
        f"count(*) filter (where regexp_full_match(v, '{NHS_SPACED}') and "
        f"{nhs_number_valid_sql('v')}) from (select distinct {value} as v from {staged} "
        f"where {_nhs_shaped(value)})"
    ).fetchone()
    shaped = f"regexp_full_match({name}, '{POSTCODE_SHAPE}')"
    lengths = ", ".join(
        f"count(*) filter (where length({name}) = {n} and {shaped}), "
        f"count(*) filter (where length({name}) = {n})"
        for n in POSTCODE_LENGTHS
    )
    postcodes = con.execute(
        f"select count(*) filter (where {shaped}), count(*) filter (where "
        f"regexp_full_match({name}, '{POSTCODE_SPACED}')), {lengths} from {staged}"
    ).fetchone()
    by_length = {
        n: (postcodes[2 + 2 * k], postcodes[3 + 2 * k]) for k, n in enumerate(POSTCODE_LENGTHS)
    }
    return ColumnCounts(
        filled,
        *nhs,
        postcode_shaped=postcodes[0],
        postcode_spaced=postcodes[1],
        by_length=by_length,
    )


def identifier_problems(
    con: duckdb.DuckDBPyConnection, staged: str, spec: TableSpec
) -> list[tuple[str, str]]:
    """(column, rule and evidence) for each column of a staged table that holds identifiers.

    One pass counts every column's values and its suspicious ones; only a column with
    suspicious values gets a second look (`_column_counts`).
    """
    columns = [c for c in spec.columns if c.kind != "date"]
    measures = [
        m
        for c in columns
        for m in (f"count({c.name})", f"count(*) filter (where {_suspicious(c.name, c.kind)})")
    ]
    if "year_of_birth" in spec.column_names:
        measures.append(f"count(*) filter (where regexp_full_match(year_of_birth, '{DATE_SHAPE}'))")
    row = con.execute(f"select {', '.join(measures)} from {staged}").fetchone()
    problems = []
    for i, column in enumerate(columns):
        filled, suspicious = row[2 * i], row[2 * i + 1]
        if not suspicious:
            continue
        counts = _column_counts(con, staged, column.name, column.kind, filled)
        if problem := nhs_problem(counts) or postcode_problem(counts):
            problems.append((column.name, problem))
    if "year_of_birth" in spec.column_names and row[-1]:
        problems.append(
            ("year_of_birth", f"date_of_birth: {row[-1]} values are full dates, not years")
        )
    return problems
