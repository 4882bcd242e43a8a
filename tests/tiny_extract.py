"""A tiny extract whose every outcome was worked out by hand.

Two practices: P001 (EMIS, London, extracted 2020-01-31) and P002 (TPP, North West,
extracted 2019-06-30). Study 2015-02-01..2020-01-31, windows of 365 days.

| patient  | what it tests                                   | index      | pre/post days |
|----------|-------------------------------------------------|------------|---------------|
| EDGE     | window edges: day -365 and +365 in, -366/+366 out, index day in neither; overlapping registrations merged | 2017-06-15 | 365 / 365 |
| LEAP     | 29 Feb 2016 inside the pre window [2015-03-02, 2016-02-29] | 2016-03-01 | 365 / 365 |
| DEREG    | censored at deregistration 2018-03-31 (80 days), re-registration later ignored | 2018-01-10 | 365 / 80 |
| DEATH    | censored at death 2019-05-20 (108 days); a consultation after death quarantined | 2019-02-01 | 365 / 108 |
| NEWREG   | registered 2016-09-01: partial pre window 2016-09-01..2017-02-28 | 2017-03-01 | 181 / 365 |
| EXTRACT  | censored at P002's extract date 2019-06-30 (166 days) | 2019-01-15 | 365 / 166 |
| PRESTUDY | only referral 2014-06-01, before study start: no index | - | - |
| DECLINE  | declined 2018-05-10, never referred: no index | - | - |
| CTRL1    | EDGE's first control (F, 50-59, IMD 2, the same recent use as EDGE) | - | - |
| CTRL2    | not registered for EDGE's whole pre window; CTRL5's control a year later | - | - |
| CTRL3    | referred in 2014, before EDGE's index | - | - |
| CTRL4    | wrong sex | - | - |
| CTRL5    | EDGE's second control, censored at its own referral 2018-03-01 (a case then) | 2018-03-01 | 365 / 365 |
| CTRL6    | referred on EDGE's index date, so not its control; no control of its own (3 recent consultations) | 2017-06-15 | 365 / 365 |

Matching as of each index date t (docs/methods.md, decision 5), with recent use counted as
(consultations in [t-90, t-1], consultations in [t-365, t-91], A&E in [t-365, t-1]):
EDGE at 2017-06-15 has (0, 1, 1): C02; H01. CTRL1 has (0, 1, 1): C50; H08. CTRL5 has
(0, 1, 1): C70; H09. Both are drawn, CTRL1 first (seeded order). CTRL5 at 2018-03-01 has
(0, 1, 0): C72; CTRL2, registered from 2017-01-01, has (0, 1, 0): C90, and is drawn. CTRL6 at
2017-06-15 has (3, 0, 0): C81-C83, which nobody of its sex, age band and IMD shares.
"""

from __future__ import annotations

from pathlib import Path

from deliveries import write_delivery

P1, P2 = "P001", "P002"
EMIS_DELIVERY, TPP_DELIVERY = "2020-01-31_emis_001", "2019-06-30_tpp_001"
REFERRAL, DECLINED, HOMELESS, PHYSICAL_ACTIVITY = (
    "871731000000106",
    "871711000000103",
    "32911000",
    "390893007",
)

PATIENTS = [
    # patient_id, practice_id, year_of_birth, sex, ethnicity, imd_quintile, rural_urban, date_of_death
    ("EDGE", P1, 1960, "F", "White", 2, "urban", None),
    ("LEAP", P1, 1980, "M", "Asian", 3, "urban", None),
    ("DEREG", P1, 1950, "F", "Black", 1, "urban", None),
    ("DEATH", P1, 1940, "M", "White", 1, "rural", "2019-05-20"),
    ("NEWREG", P1, 1990, "F", "Mixed", 4, None, None),
    ("PRESTUDY", P1, 1970, "M", "White", 5, "urban", None),
    ("DECLINE", P1, 1985, "F", "Other", 4, "urban", None),
    ("CTRL1", P1, 1962, "F", "White", 2, "urban", None),
    ("CTRL2", P1, 1962, "F", "White", 2, "urban", None),
    ("CTRL3", P1, 1962, "F", "White", 2, "urban", None),
    ("CTRL4", P1, 1962, "M", "White", 2, "urban", None),
    ("CTRL5", P1, 1961, "F", "White", 2, "urban", None),
    ("CTRL6", P1, 1963, "F", "White", 2, "urban", None),
    ("EXTRACT", P2, 1975, "F", "Unknown", 3, "rural", None),
]

REGISTRATIONS = [
    ("R01", "EDGE", P1, "2010-01-01", "2015-12-31"),
    ("R02", "EDGE", P1, "2015-06-01", None),  # overlaps R01: merged, no day twice
    ("R03", "LEAP", P1, "2010-01-01", None),
    ("R04", "DEREG", P1, "2005-01-01", "2018-03-31"),
    ("R05", "DEREG", P1, "2018-06-01", None),
    ("R06", "DEATH", P1, "2000-01-01", None),
    ("R07", "NEWREG", P1, "2016-09-01", None),
    ("R08", "PRESTUDY", P1, "2010-01-01", None),
    ("R09", "DECLINE", P1, "2010-01-01", None),
    ("R10", "CTRL1", P1, "2010-01-01", None),
    ("R11", "CTRL2", P1, "2017-01-01", None),
    ("R12", "CTRL3", P1, "2010-01-01", None),
    ("R13", "CTRL4", P1, "2010-01-01", None),
    ("R14", "CTRL5", P1, "2010-01-01", None),
    ("R15", "CTRL6", P1, "2010-01-01", None),
    ("R20", "EXTRACT", P2, "2000-01-01", None),
]

CONSULTATIONS = [
    ("C01", "EDGE", P1, "2016-06-14", "face_to_face", "gp"),  # index - 366: out
    ("C02", "EDGE", P1, "2016-06-15", "telephone", "gp"),  # index - 365: pre
    ("C03", "EDGE", P1, "2017-06-15", "face_to_face", "gp"),  # index day: neither
    ("C04", "EDGE", P1, "2017-06-16", "face_to_face", "link_worker"),  # index + 1: post
    ("C05", "EDGE", P1, "2018-06-15", "video", "gp"),  # index + 365: post
    ("C06", "EDGE", P1, "2018-06-16", "face_to_face", "gp"),  # index + 366: out
    ("C10", "LEAP", P1, "2015-03-01", "face_to_face", "gp"),  # index - 366: out
    ("C11", "LEAP", P1, "2015-03-02", "face_to_face", "gp"),  # index - 365: pre
    ("C12", "LEAP", P1, "2016-02-29", "telephone", "nurse"),  # leap day: pre
    ("C13", "LEAP", P1, "2017-03-01", "face_to_face", "gp"),  # index + 365: post
    ("C14", "LEAP", P1, "2017-03-02", "face_to_face", "gp"),  # index + 366: out
    ("C20", "DEREG", P1, "2017-05-05", "face_to_face", "gp"),  # pre
    ("C21", "DEREG", P1, "2018-03-31", "home_visit", "gp"),  # last registered day: post
    ("C22", "DEREG", P1, "2018-04-15", "face_to_face", "gp"),  # not registered: out
    ("C23", "DEREG", P1, "2018-07-01", "face_to_face", "gp"),  # after censoring: out
    ("C30", "DEATH", P1, "2019-05-20", "home_visit", "gp"),  # day of death: post
    ("C31", "DEATH", P1, "2019-06-01", "face_to_face", "gp"),  # after death: quarantined
    ("C40", "NEWREG", P1, "2016-08-15", "face_to_face", "gp"),  # before registration: out
    ("C41", "NEWREG", P1, "2016-10-10", "face_to_face", "nurse"),  # pre
    ("C50", "CTRL1", P1, "2017-01-01", "face_to_face", "gp"),  # EDGE's index: pre
    ("C51", "CTRL1", P1, "2017-12-01", "telephone", "gp"),  # EDGE's index: post
    ("C70", "CTRL5", P1, "2016-10-01", "face_to_face", "gp"),  # EDGE's pre (earlier part)
    ("C71", "CTRL5", P1, "2018-03-01", "face_to_face", "gp"),  # its own referral: index day
    ("C72", "CTRL5", P1, "2017-09-01", "telephone", "gp"),  # EDGE's post; its own pre
    ("C73", "CTRL5", P1, "2018-04-01", "face_to_face", "gp"),  # censored for EDGE; own post
    ("C80", "CTRL6", P1, "2017-06-15", "face_to_face", "gp"),  # its referral, EDGE's index day
    ("C81", "CTRL6", P1, "2017-04-01", "face_to_face", "gp"),  # recent (3 in 90 days)
    ("C82", "CTRL6", P1, "2017-05-01", "telephone", "gp"),
    ("C83", "CTRL6", P1, "2017-06-01", "face_to_face", "nurse"),
    ("C84", "CTRL6", P1, "2017-08-01", "face_to_face", "gp"),  # post
    ("C90", "CTRL2", P1, "2017-07-01", "face_to_face", "gp"),  # CTRL5's pre (earlier part)
    ("C60", "EXTRACT", P2, "2018-03-03", "face_to_face", "gp"),  # pre
    ("C61", "EXTRACT", P2, "2019-06-30", "face_to_face", "gp"),  # extract date: post
]

CLINICAL_EVENTS = [
    ("E01", "EDGE", P1, "2017-06-15", REFERRAL, "C03", None),
    ("E02", "EDGE", P1, "2018-01-01", REFERRAL, None, None),  # second referral
    ("E03", "LEAP", P1, "2016-03-01", REFERRAL, None, None),
    ("E04", "DEREG", P1, "2018-01-10", REFERRAL, None, None),
    ("E05", "DEREG", P1, "2017-11-01", HOMELESS, None, None),
    ("E06", "DEATH", P1, "2019-02-01", REFERRAL, None, None),
    ("E07", "NEWREG", P1, "2017-03-01", REFERRAL, None, None),
    ("E08", "PRESTUDY", P1, "2014-06-01", REFERRAL, None, None),  # before study start
    ("E09", "DECLINE", P1, "2018-05-10", DECLINED, None, None),
    ("E10", "CTRL3", P1, "2014-05-01", REFERRAL, None, None),
    ("E11", "LEAP", P1, "2016-04-01", PHYSICAL_ACTIVITY, None, None),
    ("E12", "CTRL1", P1, "2017-01-01", "38341003", "C50", 140),  # not an SP code
    ("E13", "DEREG", P1, "2018-05-01", REFERRAL, None, None),  # while not registered
    ("E14", "CTRL5", P1, "2018-03-01", REFERRAL, "C71", None),  # after EDGE's index
    ("E15", "CTRL6", P1, "2017-06-15", REFERRAL, "C80", None),  # on EDGE's index date
    ("E20", "EXTRACT", P2, "2019-01-15", REFERRAL, None, None),
]

HOSPITAL_ATTENDANCES = [
    ("H01", "EDGE", P1, "2017-06-14", "ae"),  # index - 1: pre
    ("H02", "EDGE", P1, "2018-06-15", "emergency_admission"),  # index + 365: post
    ("H03", "EDGE", P1, "2018-06-16", "ae"),  # index + 366: out
    ("H04", "EDGE", P1, "2017-07-01", "elective_admission"),  # not a measure
    ("H05", "DEATH", P1, "2019-05-20", "ae"),  # day of death: post
    ("H06", "DEREG", P1, "2018-02-01", "ae"),  # post
    ("H07", "LEAP", P1, "2016-03-01", "ae"),  # index day: neither
    ("H08", "CTRL1", P1, "2016-12-01", "ae"),  # EDGE's pre: as EDGE's H01
    ("H09", "CTRL5", P1, "2017-02-01", "ae"),  # EDGE's pre; before its own
]


def _for(practice: str, rows: list[tuple], position: int = 2) -> list[tuple]:
    """The rows of one practice; `position` is where practice_id stands in a row."""
    return [row for row in rows if row[position] == practice]


def write_tiny_extract(landing: Path) -> Path:
    """Write the two deliveries of the tiny extract into `landing`."""
    for practice, delivery, extracted_at, system, region, fmt in (
        (P1, EMIS_DELIVERY, "2020-01-31", "EMIS", "London", "csv"),
        (P2, TPP_DELIVERY, "2019-06-30", "TPP", "North West", "parquet"),
    ):
        write_delivery(
            landing,
            delivery,
            extracted_at,
            system,
            [practice],
            {
                "practices": [(practice, region)],
                "patients": _for(practice, PATIENTS, position=1),
                "registrations": _for(practice, REGISTRATIONS),
                "consultations": _for(practice, CONSULTATIONS),
                "clinical_events": _for(practice, CLINICAL_EVENTS),
                "hospital_attendances": _for(practice, HOSPITAL_ATTENDANCES),
            },
            fmt=fmt,
        )
    return landing


# --- a correction to P001, delivered as a delta ------------------------------------------
CORRECTION_DELIVERY = "2020-01-31_emis_002"  # same extract date, later id: applies after
CORRECTED_CONSULTATIONS = [
    # C02 was EDGE's index - 365 (pre); the practice corrects it to index - 366 (out).
    ("C02", "EDGE", P1, "2016-06-14", "telephone", "gp"),
]
DELETED = [
    ("clinical_events", "E07"),  # NEWREG's only referral was recorded in error
]


def write_tiny_correction(landing: Path, delivery_id: str = CORRECTION_DELIVERY) -> Path:
    """Write a delta for P001: C02's date corrected, NEWREG's referral E07 deleted.

    What that must do to the marts (worked in tests/test_deltas.py): NEWREG is no longer a
    referred patient (6 → 5), EDGE has no consultation in its pre window (1 → 0), and
    March 2017 loses its one referral.
    """
    return write_delivery(
        landing,
        delivery_id,
        "2020-01-31",
        "EMIS",
        [P1],
        {"consultations": CORRECTED_CONSULTATIONS, "deletions": DELETED},
        kind="delta",
    )
