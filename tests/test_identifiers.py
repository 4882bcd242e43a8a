"""Partial identifier leaks are refused whole (src/sprx_pipeline/identifiers.py).

Each case is a full delivery of one practice with 5,000 patients, one registration and one
clinical event each, in which some share of one column carries real-looking identifiers, as a
provider's mistake would: NHS numbers that pass the modulus-11 check, consistently in every
table, or postcodes. A refused delivery must leave nothing in any table, quarantine included.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest
from deliveries import write_delivery

from sprx_pipeline.config import WarehousePaths
from sprx_pipeline.identifiers import (
    NHS_PASS_CHANCE,
    ColumnCounts,
    binomial_tail,
    is_nhs_number,
    nhs_problem,
)
from sprx_pipeline.pipeline import ingest_landing

PATIENTS = 5_000
DELIVERY = "2020-01-31_emis_077"
POSTCODES = ("SW1A1AA", "M11AE", "B338TH", "LS27EY", "EH11YZ", "CF102HQ", "NE14ST", "BS15TR")


def nhs_numbers(count: int, rng: random.Random) -> list[str]:
    """Distinct 10-digit numbers with a valid modulus-11 check digit."""
    found: set[str] = set()
    while len(found) < count:
        body = f"{rng.randrange(10**8, 10**9):09d}"
        check = (11 - sum((10 - i) * int(d) for i, d in enumerate(body)) % 11) % 11
        if check != 10:
            found.add(body + str(check))
    return sorted(found)


def random_digits(count: int, rng: random.Random) -> list[str]:
    """Distinct random 10-digit pseudonyms (about 1 in 11 passes modulus 11 by chance)."""
    found: set[str] = set()
    while len(found) < count:
        found.add(f"{rng.randrange(10**9, 10**10)}")
    return sorted(found)


def delivery(landing: Path, patient_ids: list[str], values: list[str | None] | None = None) -> Path:
    """A landing folder with one delivery: one practice, and a patient row, registration
    and clinical event per patient id."""
    values = values or [None] * len(patient_ids)
    write_delivery(
        landing,
        DELIVERY,
        "2020-01-31",
        "EMIS",
        ["P077"],
        {
            "practices": [("P077", "London")],
            "patients": [(p, "P077", 1970, "F", "White", 3, "urban", None) for p in patient_ids],
            "registrations": [
                (f"R{i}", p, "P077", "2010-01-01", None) for i, p in enumerate(patient_ids)
            ],
            "clinical_events": [
                (f"E{i}", p, "P077", "2019-01-01", "38341003", None, v)
                for i, (p, v) in enumerate(zip(patient_ids, values, strict=True))
            ],
        },
    )
    return landing


def ingest(tmp_path: Path, landing: Path):
    paths = WarehousePaths.at(tmp_path / "warehouse" / "sprx.duckdb")
    paths.published.parent.mkdir(parents=True)
    (outcome,) = ingest_landing(paths, landing).outcomes
    return paths, outcome


def assert_nothing_kept(paths: WarehousePaths) -> None:
    """No row of the refused delivery in any raw table or in the quarantine."""
    with duckdb.connect(str(paths.work), read_only=True) as con:
        tables = [
            t
            for (t,) in con.execute(
                "select table_schema || '.' || table_name from "
                "information_schema.tables where table_schema in "
                "('raw', 'audit') and table_name not in "
                "('deliveries', 'codelist_pulls')"
            ).fetchall()
        ]
        assert {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in tables} == {
            t: 0 for t in tables
        }


def with_leak(ids: list[str], share: float, leaked: list[str]) -> list[str]:
    """The ids with every k-th one replaced by a leaked value, `share` of them in all."""
    out, count = list(ids), round(share * len(ids))
    step = len(ids) // count
    for n in range(count):
        out[n * step] = leaked[n]
    return out


OPAQUE = [f"P077-{i:06d}" for i in range(PATIENTS)]  # the practice's own pseudonym format


@pytest.mark.parametrize("share", [0.01, 0.05, 0.20])
def test_nhs_numbers_leaked_into_patient_ids_are_refused(tmp_path, share):
    leaked = nhs_numbers(round(share * PATIENTS), random.Random(1))
    paths, outcome = ingest(
        tmp_path, delivery(tmp_path / "landing", with_leak(OPAQUE, share, leaked))
    )
    count = len(leaked)
    assert outcome.status == "refused"
    assert (
        f"patients.csv column patient_id: nhs_number: {count} of {count} distinct "
        f"NHS-shaped values among {PATIENTS} values of another format pass the "
        "modulus-11 check"
    ) in outcome.reason
    assert_nothing_kept(paths)


@pytest.mark.parametrize("share", [0.01, 0.05, 0.20])
def test_nhs_numbers_leaked_into_a_value_column_are_refused(tmp_path, share):
    leaked = nhs_numbers(round(share * PATIENTS), random.Random(2))
    values = with_leak(["140.5"] * PATIENTS, share, [f"{n}.0" for n in leaked])
    paths, outcome = ingest(tmp_path, delivery(tmp_path / "landing", OPAQUE, values))
    assert outcome.status == "refused"
    assert "clinical_events.csv column numeric_value: nhs_number" in outcome.reason
    assert f"{len(leaked)} of {len(leaked)} distinct NHS-shaped values" in outcome.reason
    assert_nothing_kept(paths)


@pytest.mark.parametrize("share", [0.01, 0.05, 0.20])
def test_postcodes_leaked_into_patient_ids_are_refused(tmp_path, share):
    count = round(share * PATIENTS)
    leaked = [
        f"{POSTCODES[i % len(POSTCODES)][:-2]}{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}"
        for i in range(count)
    ]
    paths, outcome = ingest(
        tmp_path, delivery(tmp_path / "landing", with_leak(OPAQUE, share, leaked))
    )
    assert outcome.status == "refused"
    assert "patients.csv column patient_id: postcode:" in outcome.reason
    assert_nothing_kept(paths)


def test_random_ten_digit_pseudonyms_alone_load(tmp_path):
    ids = random_digits(PATIENTS, random.Random(3))
    passing = sum(is_nhs_number(i) for i in ids)
    assert 0.07 < passing / PATIENTS < 0.11  # about 1 in 11 pass by chance
    paths, outcome = ingest(tmp_path, delivery(tmp_path / "landing", ids))
    assert outcome.status == "applied", outcome.reason
    with duckdb.connect(str(paths.work), read_only=True) as con:
        assert con.execute("select count(*) from raw.patients").fetchone() == (PATIENTS,)


def test_among_random_ten_digit_pseudonyms_a_4_percent_leak_is_caught_and_1_percent_is_not(
    tmp_path,
):
    """The bound (10^-6, exact binomial against 1/11) at 5,000 rows: 555 of 5,000 passing
    values are needed. A 4% leak gives about 5,000 (0.04 + 0.96/11) = 636, refused; 1% gives
    about 500, indistinguishable from chance, so it loads: the stated limit of the check."""
    rng = random.Random(4)
    ids = random_digits(PATIENTS, rng)
    four = with_leak(ids, 0.04, nhs_numbers(200, rng))
    paths, outcome = ingest(tmp_path / "four", delivery(tmp_path / "four" / "landing", four))
    assert outcome.status == "refused"
    assert (
        "of its 10-digit values pass the modulus-11 check, where random digits pass 1 in 11"
        in outcome.reason
    )
    assert_nothing_kept(paths)
    one = with_leak(ids, 0.01, nhs_numbers(50, rng))
    _, outcome = ingest(tmp_path / "one", delivery(tmp_path / "one" / "landing", one))
    assert outcome.status == "applied"


def test_the_bound_and_its_false_alarm_rate():
    # 555 of 5,000 is the first count whose tail under 1/11 is below 10^-6.
    assert (
        binomial_tail(555, 5_000, NHS_PASS_CHANCE)
        <= 1e-6
        < binomial_tail(554, 5_000, NHS_PASS_CHANCE)
    )
    # A 4% leak crosses it with probability 0.9998, a 1% leak with 0.006.
    assert binomial_tail(555, 5_000, 0.04 + 0.96 / 11) > 0.999
    assert binomial_tail(555, 5_000, 0.01 + 0.99 / 11) < 0.01
    # Three valid values of three: (1/11)^3 = 7.5e-4.
    assert binomial_tail(3, 3, 1 / 11) == pytest.approx(1 / 1331)
    counts = ColumnCounts(
        filled=5_000,
        nhs_shaped=5_000,
        nhs_valid=500,
        nhs_spaced_valid=0,
        postcode_shaped=0,
        postcode_spaced=0,
        by_length={},
    )
    assert nhs_problem(counts) is None  # chance: 455 expected
    # A handful of valid NHS numbers among pseudonyms of another format stand out.
    counts = ColumnCounts(
        filled=5_000,
        nhs_shaped=3,
        nhs_valid=3,
        nhs_spaced_valid=0,
        postcode_shaped=0,
        postcode_spaced=0,
        by_length={},
    )
    assert nhs_problem(counts).startswith("nhs_number: 3 of 3 distinct NHS-shaped values")
