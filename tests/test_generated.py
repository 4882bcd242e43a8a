"""A generated extract through the real pipeline: plausible rates, and the planted signal found.

The generator multiplies consultation and A&E rates by 1.5 in the year before a referral and
1.2 in the year after, so referred patients' post/pre rate ratio should be near 0.8 while
their matched controls' stays near 1.0.
"""

from __future__ import annotations

import duckdb
import pytest

from conftest import run_pipeline
from sprx_pipeline.synthetic import generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    generate(root / "landing", patients=20_000, practices=12, seed=7)
    report = run_pipeline(root / "landing", root / "warehouse" / "sprx.duckdb")
    work = duckdb.connect(str(root / "warehouse" / "sprx.work.duckdb"), read_only=True)
    yield report, work
    work.close()


def _rate_per_person_year(con, events_sql: str) -> float:
    """Events on registered days in the study period per registered person-year."""
    (rate,) = con.execute(f"""
        with spans as (
            select practice_id, patient_id, greatest(span_start, date '2015-02-01') as s,
                   least(span_end, date '2020-01-31') as e
            from intermediate.int_registered_spans),
        events as ({events_sql})
        select (select count(*) from events join spans using (practice_id, patient_id)
                where event_date between s and e and event_date between '2015-02-01' and '2020-01-31')
             / (select sum(date_diff('day', s, e) + 1) / 365.25 from spans where e >= s)
    """).fetchone()
    return rate


def test_every_generated_row_is_loaded(generated):
    report, work = generated
    assert len(report.ingest.applied) == len(report.ingest.outcomes) > 1
    assert work.execute("select count(*) from audit.quarantine").fetchone() == (0,)


def test_consultation_and_ae_rates_are_those_of_uk_primary_care(generated):
    _, work = generated
    consultations = _rate_per_person_year(
        work, "select practice_id, patient_id, consultation_date as event_date "
              "from raw.consultations")
    ae = _rate_per_person_year(
        work, "select practice_id, patient_id, attendance_date as event_date "
              "from raw.hospital_attendances where setting = 'ae'")
    assert 5.0 <= consultations <= 6.0
    assert 0.3 <= ae <= 0.4


def test_referral_uptake_reaches_one_to_two_percent_a_year_by_2019(generated):
    report, work = generated
    (referred_2019, registered_mid_2019) = work.execute("""
        select count(distinct (practice_id, patient_id)) filter (
                   where month between '2019-01-01' and '2019-12-01'),
               (select registered_patients from marts.sp_uptake_monthly
                where month = '2019-07-01' and group_type = 'all')
        from marts.sp_uptake_monthly m
        join (select distinct practice_id, patient_id,
                     date_trunc('month', event_date) as month
              from marts.sp_referrals where category = 'referral' and while_registered) r
          using (month)
        where m.group_type = 'all'
    """).fetchone()
    assert 0.01 <= referred_2019 / registered_mid_2019 <= 0.02
    declines = work.execute("select count(*) filter (where category = 'declined') / count(*) "
                            "from marts.sp_referrals where category in ('referral', 'declined')"
                            ).fetchone()[0]
    assert 0.15 <= declines <= 0.25


def test_linkage_recovers_the_planted_change_and_controls_stay_flat(generated):
    _, work = generated
    rates = {(cohort, window): rate for cohort, window, rate in work.execute(
        "select cohort, \"window\", rate_per_1000_py from marts.sp_outcome_summary "
        "where measure = 'consultations'").fetchall()}
    case_ratio = rates["referred", "post"] / rates["referred", "pre"]
    control_ratio = rates["control", "post"] / rates["control", "pre"]
    assert 0.72 <= case_ratio <= 0.88
    assert 0.92 <= control_ratio <= 1.08


def test_most_cases_find_five_controls(generated):
    _, work = generated
    shares = dict(work.execute("""
        select coalesce(n, 0) as controls, count(*) / sum(count(*)) over () as share
        from marts.sp_patient_outcomes o
        left join (select practice_id, case_patient_id, count(*) as n
                   from marts.sp_matched_controls group by all) c
          on c.practice_id = o.practice_id and c.case_patient_id = o.patient_id
        group by 1""").fetchall())
    assert shares.get(5, 0) >= 0.8
