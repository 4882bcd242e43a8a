"""The published marts on the tiny extract, against values worked out by hand.

See tests/tiny_extract.py for what each patient tests and how its numbers arise.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

D = date.fromisoformat

OUTCOME_COLUMNS = (
    "patient_id, index_date, age_at_index, age_band, pre_days, post_days, complete_follow_up, "
    "pre_consultations, post_consultations, pre_ae_attendances, post_ae_attendances, "
    "pre_emergency_admissions, post_emergency_admissions"
)

# patient, index, age, band, pre_days, post_days, complete, consultations pre/post,
# A&E pre/post, emergency admissions pre/post
EXPECTED_OUTCOMES = [
    # CTRL5: pre [2017-03-01, 2018-02-28] holds C72 (C70 is earlier), post holds C73.
    ("CTRL5", D("2018-03-01"), 57, "50-59", 365, 365, True, 1, 1, 0, 0, 0, 0),
    # CTRL6: C81-C83 in the 90 days before its index, C84 after; C80 is the index day.
    ("CTRL6", D("2017-06-15"), 54, "50-59", 365, 365, True, 3, 1, 0, 0, 0, 0),
    ("DEATH", D("2019-02-01"), 79, "70-79", 365, 108, False, 0, 1, 0, 1, 0, 0),
    ("DEREG", D("2018-01-10"), 68, "60-69", 365, 80, False, 1, 1, 0, 1, 0, 0),
    ("EDGE", D("2017-06-15"), 57, "50-59", 365, 365, True, 1, 2, 1, 0, 0, 1),
    ("EXTRACT", D("2019-01-15"), 44, "40-49", 365, 166, False, 1, 1, 0, 0, 0, 0),
    ("LEAP", D("2016-03-01"), 36, "30-39", 365, 365, True, 2, 1, 0, 0, 0, 0),
    ("NEWREG", D("2017-03-01"), 27, "18-29", 181, 365, True, 1, 0, 0, 0, 0, 0),
]


def test_every_referred_patient_outcome_matches_the_hand_worked_values(tiny):
    rows = tiny.query(f"select {OUTCOME_COLUMNS} from marts.sp_patient_outcomes order by 1")
    assert rows == EXPECTED_OUTCOMES


def test_referral_before_study_start_and_decline_without_referral_give_no_index(tiny):
    outcomes = {r[0] for r in tiny.query("select patient_id from marts.sp_patient_outcomes")}
    assert "PRESTUDY" not in outcomes and "DECLINE" not in outcomes
    referrals = tiny.query(
        "select event_id, category, while_registered from marts.sp_referrals "
        "where patient_id in ('PRESTUDY', 'DECLINE') order by 1"
    )
    assert referrals == [("E08", "referral", True), ("E09", "declined", True)]


def test_sp_referrals_holds_every_sp_coded_event_and_flags_unregistered_ones(tiny):
    counts = dict(tiny.query("select category, count(*) from marts.sp_referrals group by 1"))
    assert counts == {"referral": 12, "declined": 1, "related_referral": 1, "homeless": 1}
    unregistered = tiny.query("select event_id from marts.sp_referrals where not while_registered")
    assert unregistered == [("E13",)]
    versions = tiny.query("select distinct codelist, codelist_version from marts.sp_referrals")
    assert versions == [("social-prescribing", "2026-11-22.1")]


def test_consultation_modes_split_the_consultation_counts(tiny):
    rows = tiny.query(
        "select pre_consultations_telephone, post_consultations_face_to_face, "
        "post_consultations_video from marts.sp_patient_outcomes "
        "where patient_id = 'EDGE'"
    )
    assert rows == [(1, 1, 1)]  # C02 telephone; C04 face to face, C05 video


def test_controls_are_eligible_as_of_the_index_date_and_matched_on_recent_use(tiny):
    rows = tiny.query(
        "select case_patient_id, control_patient_id, control_number, index_date, "
        "pre_days, post_days, pre_consultations, post_consultations, "
        "pre_ae_attendances, censored_at_referral, follow_up_end "
        "from marts.sp_matched_controls order by 1, 3"
    )
    # EDGE (2017-06-15; recent use 0, 1, 1) draws CTRL1 and CTRL5, both (0, 1, 1), CTRL1
    # first: md5('42|P001|EDGE|CTRL1') starts 877c, CTRL5's fd85. CTRL2 joined in 2017, CTRL3
    # was referred in 2014, CTRL4 is male and CTRL6 was referred on EDGE's index date.
    # CTRL5 is referred on 2018-03-01, inside EDGE's post window: its follow-up ends the day
    # before, 2018-02-28, 258 days after EDGE's index; C73 (2018-04-01) is not counted.
    # At its own index CTRL5 (0, 1, 0) draws CTRL2 (0, 1, 0: C90), registered from
    # 2017-01-01, so through CTRL5's pre window [2017-03-01, 2018-02-28].
    assert rows == [
        ("CTRL5", "CTRL2", 1, D("2018-03-01"), 365, 365, 1, 0, 0, False, D("2019-03-01")),
        ("EDGE", "CTRL1", 1, D("2017-06-15"), 365, 365, 1, 1, 1, False, D("2018-06-15")),
        ("EDGE", "CTRL5", 2, D("2017-06-15"), 365, 258, 1, 1, 1, True, D("2018-02-28")),
    ]


def test_trial_eligibility_of_every_case(tiny):
    with duckdb.connect(str(tiny.paths.work), read_only=True) as con:
        rows = con.execute(
            "select patient_id, ineligible_reason from intermediate.int_trial_cases order by 1"
        ).fetchall()
    # NEWREG, registered from 2016-09-01, was not registered on every day of its pre window
    # [2016-03-01, 2017-02-28]: its trial has no controls, and it keeps its outcomes.
    assert [r for r in rows if r[1]] == [("NEWREG", "not_registered_through_pre_window")]
    assert len(rows) == 8


def test_outcome_summary_rates_per_1000_person_years(tiny):
    rows = tiny.query(
        'select cohort, measure, "window", patients, events, person_days, '
        "person_years, rate_per_1000_py from marts.sp_outcome_summary "
        "where measure = 'consultations' order by 1, 3 desc"
    )
    # referred pre: 10 consultations (EXPECTED_OUTCOMES) over 7 x 365 + 181 = 2736 days:
    # 10 * 365250 / 2736 = 1334.98; post: 8 over 108 + 80 + 166 + 5 x 365 = 2179 days.
    # controls (CTRL1, CTRL5 for EDGE, CTRL2 for CTRL5): pre 3 over 3 x 365 days; post
    # 1 + 1 + 0 over 365 + 258 + 365 = 988 days: 2 * 365250 / 988 = 739.37.
    assert rows == [
        ("control", "consultations", "pre", 3, 3, 1095, 2.9979, 1000.68),
        ("control", "consultations", "post", 3, 2, 988, 2.705, 739.37),
        ("referred", "consultations", "pre", 8, 10, 2736, 7.4908, 1334.98),
        ("referred", "consultations", "post", 8, 8, 2179, 5.9658, 1340.98),
    ]
    ae = tiny.query(
        'select "window", events from marts.sp_outcome_summary where cohort = '
        "'referred' and measure = 'ae_attendances' order by 1 desc"
    )
    assert ae == [("pre", 1), ("post", 2)]


@pytest.mark.parametrize(
    "month, group_type, group_value, expected",
    [
        # 15 June 2017: 13 at P001 (CTRL2 from Jan 2017) + EXTRACT; EDGE and CTRL6 referred on
        # the 15th; 10 of the 14 are female
        ("2017-06-01", "all", "all", (2, 0, 14, 14285.71)),
        ("2017-06-01", "sex", "F", (2, 0, 10, 20000.0)),
        # January 2018: EDGE's second referral and DEREG's first
        ("2018-01-01", "all", "all", (2, 0, 14, 14285.71)),
        ("2018-01-01", "source_system", "TPP", (0, 0, 1, 0.0)),
        # May 2018: DEREG between registrations; DECLINE declined; DEREG's code while unregistered
        ("2018-05-01", "all", "all", (0, 1, 13, 0.0)),
        # July 2019: DEATH died in May; P002's extract ended on 30 June
        ("2019-07-01", "all", "all", (0, 0, 12, 0.0)),
        # 50-59 in 2018: EDGE (58), CTRL1-CTRL4 (56), CTRL5 (57), CTRL6 (55); EDGE referred
        ("2018-01-01", "age_band", "50-59", (1, 0, 7, 14285.71)),
    ],
)
def test_uptake_numerators_and_denominators_for_a_month(
    tiny, month, group_type, group_value, expected
):
    rows = tiny.query(
        "select referred_patients, declined_patients, registered_patients, "
        "rate_per_100k from marts.sp_uptake_monthly where month = ? and "
        "group_type = ? and group_value = ?",
        [D(month), group_type, group_value],
    )
    assert rows == [expected]


def test_uptake_covers_every_month_of_the_study_period(tiny):
    months = tiny.query(
        "select min(month), max(month), count(distinct month) from marts.sp_uptake_monthly"
    )
    assert months == [(D("2015-02-01"), D("2020-01-01"), 60)]


def test_practice_feedback_accounts_for_every_row(tiny):
    rows = tiny.query(
        "select practice_id, delivery_id, source_system, consultations_received, "
        "consultations_loaded, consultations_quarantined, patients_loaded, "
        "sp_code_prevalence from marts.dq_practice_feedback order by 1"
    )
    assert rows == [
        ("P001", "2020-01-31_emis_001", "EMIS", 31, 30, 1, 13, 53.846),  # 7 of 13 referred
        ("P002", "2019-06-30_tpp_001", "TPP", 2, 2, 0, 1, 100.0),
    ]


def test_consultation_after_death_is_quarantined_with_its_rule(tiny):
    rows = tiny.query(
        "select delivery_id, table_name, rule, row_json->>'consultation_id' from audit.quarantine"
    )
    assert rows == [("2020-01-31_emis_001", "consultations", "after_death", "C31")]
    accounts = tiny.query(
        "select table_name, received, loaded, quarantined from "
        "audit.delivery_tables where delivery_id = '2020-01-31_emis_001' "
        "and table_name = 'consultations'"
    )
    assert accounts == [("consultations", 31, 30, 1)]


def test_build_records_the_codelist_version_it_used(tiny):
    # The published copy is taken from a build that passed; the work file then marks it published.
    rows = tiny.query("select status, codelist, codelist_version from audit.builds")
    assert rows == [("success", "social-prescribing", "2026-11-22.1")]
    with duckdb.connect(str(tiny.paths.work), read_only=True) as con:
        assert con.execute("select status from audit.builds").fetchall() == [("published",)]
    pulls = tiny.query("select codelist, version, status from audit.codelist_pulls")
    assert pulls == [("social-prescribing", "2026-11-22.1", "verified")]


def test_published_warehouse_is_read_only_and_holds_only_published_schemas(tiny):
    assert not tiny.paths.published.stat().st_mode & 0o222
    schemas = {r[0] for r in tiny.query("select distinct schema_name from duckdb_tables()")}
    assert schemas == {"marts", "audit", "codelists", "meta"}
