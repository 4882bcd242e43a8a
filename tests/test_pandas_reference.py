"""The plain-pandas `sp_patient_outcomes` of the benchmark gives exactly the published table.

`make bench` times benchmarks/pandas_outcomes.py against the dbt build; this test is what
makes that a comparison of two implementations of one definition. The benchmark checks the
equality again on its own extracts (1M patients), outside the test suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pandas_outcomes  # noqa: E402


def test_pandas_reference_equals_the_published_patient_outcomes(tiny):
    with duckdb.connect(str(tiny.paths.work), read_only=True) as con:
        computed = pandas_outcomes.patient_outcomes(pandas_outcomes.load_inputs(con))
    with duckdb.connect(str(tiny.paths.published), read_only=True) as con:
        published = con.sql("select * from marts.sp_patient_outcomes").df()
    assert pandas_outcomes.differences(published, computed) == []
    # Not equal by both being empty: the eight hand-worked referred patients, EDGE's counts
    # as in tests/test_linkage.py (C02 pre; C04 and C05 post; H01 pre A&E).
    edge = computed[computed["patient_id"] == "EDGE"].iloc[0]
    assert len(computed) == 8
    assert (
        edge["pre_consultations"],
        edge["post_consultations"],
        edge["pre_ae_attendances"],
        edge["post_emergency_admissions"],
    ) == (1, 2, 1, 1)


def test_differences_names_the_row_that_differs(tiny):
    with duckdb.connect(str(tiny.paths.published), read_only=True) as con:
        published = con.sql("select * from marts.sp_patient_outcomes").df()
    changed = published.copy()
    changed.loc[changed["patient_id"] == "LEAP", "post_days"] = 364
    (difference,) = pandas_outcomes.differences(published, changed)
    # rows in (practice_id, patient_id) order: CTRL5, CTRL6, DEATH, DEREG, EDGE, LEAP
    assert difference.startswith("row 5: ('LEAP'") and "365" in difference and "364" in difference
