"""Synthetic GP extract deliveries, shaped like the RSC/ORCHID extracts the pipeline serves.

The generator writes one full delivery per group of up to ten practices on the same clinical
system, in the layout of the extract contract (`contract.TABLES`): gzip CSV for EMIS and
Vision, Parquet for TPP and Microtest. Every row keeps the contract's rules, so the loader
should quarantine nothing, and the figures land near the published ones in `domain.md`
(about 5.5 consultations and 0.35 A&E attendances per registered person-year, 1.5% of the
registered list referred to social prescribing in 2019, a fifth of SP codes declines).

Who uses services when, who is referred and what referral does follow an explicit causal
model (`synthetic_process`, whose docstring writes it down): a persistent frailty per
patient, transient spells of high use, a referral hazard that rises with the consultations
the GP has seen recently (so referral is far more likely during a spell, which then ends by
itself), and a true causal effect `CausalModel.effect` (`sprx generate --effect`) multiplying
each referred patient's consultation, A&E and emergency admission rates for a year after
referral relative to the same patient's rates without it. A before/after comparison of
referred patients therefore shows a fall even when `effect` is 1 (regression to the mean),
and a method that recovers `effect` is estimating the causal effect.

Everything is vectorised with NumPy and PyArrow: the Python loops run per delivery, practice,
block of 50,000 patients and calendar year, never per row. Each block draws from its own
random stream (seeded by `seed`, practice and block number), so the output depends only on
the arguments and is byte-identical from run to run (the gzip header carries no time).
The gzip is written by zlib at level 1: Arrow's gzip stream compresses at level 9, 40 times
slower, which would make a 1M-patient extract take minutes. CSV values are never quoted:
none of them contains a comma, quote or line break (Arrow would refuse to write one that did).

>>> summary = generate(Path("landing"), patients=2_000, practices=4)   # doctest: +SKIP
>>> summary.deliveries                                                # doctest: +SKIP
['2020-01-31_emis_001', '2020-01-31_tpp_001', '2020-01-31_microtest_001']
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sprx_pipeline.contract import (
    ATTENDANCE_SETTINGS,
    CONSULTATION_MODES,
    CONTRACT_VERSION,
    ETHNICITIES,
    MANIFEST_NAME,
    REGIONS,
    SEXES,
    STAFF_ROLES,
    TABLES,
    file_entry,
    write_manifest,
)
from sprx_pipeline.synthetic_process import (
    NO_DATE,
    CausalModel,
    History,
    Spells,
    apply_effect,
    days_in,
    draw_spells,
    expected_use_days,
    first_referrals,
    sample_in,
    take,
    use_events,
)

__all__ = ["CausalModel", "GenerationSummary", "generate"]

# --- Calendar -------------------------------------------------------------------------------
HISTORY_START = date(2013, 1, 1)  # first day of event history in the extract
STUDY_START = date(2015, 2, 1)  # index dates from here (methods.md study_start)
STUDY_END = date(2020, 1, 31)  # ... to here (methods.md study_end)
EARLIEST_REGISTRATION = date(1990, 1, 1)
WINDOW_DAYS = 365  # pre and post windows around the index date
_EPOCH = date(1970, 1, 1)

# --- Practices and deliveries ---------------------------------------------------------------
SYSTEMS = ("EMIS", "TPP", "Vision", "Microtest")
SYSTEM_SHARES = (0.55, 0.30, 0.10, 0.05)
CSV_SYSTEMS = frozenset({"EMIS", "Vision"})  # the others deliver Parquet
PRACTICES_PER_DELIVERY = 10
# Rough share of the English population by NHS England region, in REGIONS order.
REGION_SHARES = (0.15, 0.13, 0.19, 0.11, 0.16, 0.16, 0.10)
LIST_SIZE_SIGMA = 0.5  # lognormal spread of practice list sizes
# SP coding differs by clinical system (GM-SDE: TPP > EMIS > Vision); relative factors.
SYSTEM_SP_FACTOR = {"EMIS": 1.0, "TPP": 1.25, "Vision": 0.45, "Microtest": 0.8}
PRACTICE_SP_SIGMA = 0.4  # practice-to-practice spread of SP coding
PRACTICE_CONSULT_SIGMA = 0.12  # practice-to-practice spread of consultation rates
RURAL_PRACTICE_SHARE = 0.2

# --- Patients -------------------------------------------------------------------------------
# Share of the population by five-year age band 0-4 ... 90-94 (England, roughly ONS 2019).
AGE_BAND_SHARES = np.array(
    [5.8, 6.2, 5.9, 5.5, 6.1, 6.8, 6.7, 6.5, 6.1, 6.8, 7.0, 6.5, 5.6, 5.0, 5.0, 3.5, 2.5, 1.5, 0.8]
)
SEX_SHARES = (0.495, 0.495, 0.002, 0.008)  # in SEXES order: F, M, I, U
# Ethnicity in ETHNICITIES order: White, Mixed, Asian, Black, Other, Unknown.
ETHNICITY_SHARES = (0.83, 0.03, 0.07, 0.025, 0.015, 0.03)
ETHNICITY_SHARES_LONDON = (0.55, 0.05, 0.18, 0.13, 0.05, 0.04)
IMD_SPREAD = 0.9  # sd of a patient's IMD quintile around the practice's
IMD_MISSING = 0.02
RURAL_URBAN_MISSING = 0.03
FRAILTY_SHAPE = 1.3  # gamma frailty, mean 1, variance 1/shape
HOMELESS_SHARE = 0.003

# --- Registrations and deaths ---------------------------------------------------------------
NEWCOMER_SHARE = 0.22  # of those born before 2013: registered during 2013-
LEAVE_RATE = 0.05  # deregistrations per registered year
REREGISTER_SHARE = 0.1  # of leavers: return to the same practice later
REREGISTER_MIN_GAP = 30


def _death_hazard(age: np.ndarray) -> np.ndarray:
    """Annual death hazard by age: Gompertz, about 1% a year over an English age structure."""
    return np.minimum(np.exp(-10.1 + 0.095 * age) + np.where(age < 1, 0.004, 0.0), 0.6)


# --- Consultations and hospital use (rates per registered person-year) ----------------------
CONSULTATION_RATE = 5.5
AE_RATE = 0.35
HOSPITAL_RATES = {"emergency_admission": 0.09, "elective_admission": 0.10, "outpatient": 0.5}
OUTSIDE_REGISTRATION_SHARE = 0.01  # attendances dated outside registered time (noise)
_AGE_KNOTS = np.array([0, 1, 5, 10, 15, 20, 30, 45, 60, 70, 80, 90, 100], dtype=float)
_CONSULT_MALE = np.array([9, 6, 3, 2.2, 2.2, 2.3, 2.6, 3.5, 5, 6.5, 8.5, 10, 10], dtype=float)
_CONSULT_FEMALE = np.array([9, 6, 3, 2.4, 3.5, 5.5, 6, 5.5, 6, 7, 9, 10.5, 10.5], dtype=float)
_AE_AGE = np.array([1.6, 1.5, 0.8, 0.8, 1.0, 1.4, 1.2, 0.9, 0.9, 1.0, 1.5, 2.3, 2.6])
_HOSPITAL_AGE = {
    "emergency_admission": np.array(
        [0.8, 0.5, 0.3, 0.3, 0.4, 0.5, 0.5, 0.6, 1.0, 1.8, 3.2, 5.0, 5.5]
    ),
    "elective_admission": np.array(
        [0.2, 0.2, 0.2, 0.2, 0.3, 0.4, 0.5, 0.8, 1.4, 2.0, 2.2, 1.8, 1.5]
    ),
    "outpatient": np.array([0.8, 0.5, 0.4, 0.4, 0.5, 0.6, 0.7, 0.9, 1.3, 1.7, 1.9, 1.8, 1.6]),
}
# Factors by IMD quintile 1 (most deprived) .. 5; index 0 is "missing".
_IMD_CONSULT = np.array([1.0, 1.15, 1.08, 1.0, 0.95, 0.9])
_IMD_AE = np.array([1.0, 1.3, 1.15, 1.0, 0.9, 0.8])
_IMD_REFERRAL = np.array([1.0, 1.5, 1.25, 1.0, 0.85, 0.7])
MODE_SHARES = (0.61, 0.31, 0.022, 0.013, 0.045)  # CONSULTATION_MODES, under 75
MODE_SHARES_OLD = (0.52, 0.26, 0.01, 0.16, 0.05)  # 75 and over: more home visits
ROLE_SHARES = (0.60, 0.30, 0.0, 0.10)  # STAFF_ROLES: gp, nurse, lw, other
LINK_WORKER_SHARE = 0.25  # of consultations in the year after a referral
# The outcomes referral changes (sp_effect_estimates' measures), by their names in `_rates`.
EFFECT_OUTCOMES = ("consultations", "ae", "emergency_admission")

# --- Social prescribing codes (domain.md) ---------------------------------------------------
SP_REFERRAL = "871731000000106"
SP_DECLINED = "871711000000103"
RELATED_REFERRALS = ("390893007", "837111000000105", "771491000000104")
RELATED_SHARES = (0.6, 0.2, 0.2)
HOMELESS = "32911000"
SP_CODES = (SP_REFERRAL, SP_DECLINED, *RELATED_REFERRALS, HOMELESS)
# Annual referral hazard among registered patients; later years stay at the 2019 rate.
REFERRAL_RATE = {
    2013: 0.0005,
    2014: 0.001,
    2015: 0.002,
    2016: 0.004,
    2017: 0.007,
    2018: 0.011,
    2019: 0.015,
}
DECLINE_RATIO = 0.29  # declines per referral-hazard unit: ~20% of SP codes
SECOND_REFERRAL_SHARE = 0.16  # -> about 15% of referred patients referred again
SECOND_REFERRAL_GAP = 60
RELATED_REFERRAL_SHARE = 0.03
SP_EVENT_IN_CONSULTATION = 0.5  # declines, related referrals, homeless: with a consultation
_REFERRAL_AGE = np.array([0.1, 0.1, 0.1, 0.15, 0.3, 0.8, 0.85, 0.95, 1.1, 1.3, 1.7, 1.8, 1.8])

# --- Background clinical events -------------------------------------------------------------
# Common SNOMED CT concepts (valid Verhoeff check digits) and what a numeric value would be.
BACKGROUND_CODES = ("38341003", "44054006", "195967001", "35489007", "197480006")
BACKGROUND_EVENT_SHARE = 0.3  # of consultations that record one of these codes
_CODE_AGE = np.array(
    [  # relative weight of each code by age (rows: _AGE_KNOTS)
        # hypertension, type 2 diabetes, asthma, depression, anxiety
        [0.0, 0.0, 0.3, 0.0, 0.0],
        [0.0, 0.0, 0.3, 0.0, 0.0],
        [0.0, 0.0, 0.4, 0.0, 0.02],
        [0.0, 0.0, 0.4, 0.05, 0.1],
        [0.01, 0.0, 0.35, 0.3, 0.3],
        [0.02, 0.01, 0.3, 0.5, 0.45],
        [0.1, 0.05, 0.3, 0.5, 0.45],
        [0.5, 0.3, 0.3, 0.45, 0.35],
        [1.0, 0.55, 0.3, 0.4, 0.3],
        [1.3, 0.65, 0.3, 0.35, 0.25],
        [1.5, 0.6, 0.3, 0.35, 0.2],
        [1.5, 0.5, 0.3, 0.35, 0.2],
        [1.5, 0.5, 0.3, 0.35, 0.2],
    ]
)
MAIN_CONDITION_BOOST = 5.0  # each patient has one condition recorded more often

BLOCK_PATIENTS = 50_000  # patients generated together; bounds memory
GZIP_LEVEL = 1  # speed over size: level 9 is 40x slower for 25% less
_CSV_OPTIONS = dict(quoting_style="none", quoting_header="none", batch_size=1 << 16)


@dataclass(frozen=True)
class GenerationSummary:
    """What `generate` wrote: delivery ids in order and rows per table over all deliveries."""

    out_dir: Path
    deliveries: list[str]
    patients: int
    practices: int
    rows: dict[str, int]


@dataclass(frozen=True)
class _Practice:
    index: int
    practice_id: str
    region: str
    system: str
    size: int
    deprivation: float  # centre of its patients' IMD quintiles
    rural: bool
    consult_factor: float
    sp_factor: float  # SP coding intensity, mean 1 over all patients


@dataclass(frozen=True)
class _Setup:
    h0: int  # HISTORY_START as a day number
    x: int  # extracted_at as a day number
    study_start: int
    study_end: int
    years: tuple[int, ...]  # calendar years of event history
    model: CausalModel


# --- Dates ----------------------------------------------------------------------------------
def _day(d: date) -> int:
    return (d - _EPOCH).days


def _year_of(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _normalise(weights: np.ndarray, person_days: np.ndarray) -> np.ndarray:
    """Scale relative weights to mean 1 over registered person-time."""
    mean = float((weights * person_days).sum()) / max(float(person_days.sum()), 1.0)
    return weights / mean if mean > 0 else weights


def _choice(rng, shares, n: int) -> np.ndarray:
    return rng.choice(len(shares), size=n, p=np.asarray(shares) / np.sum(shares))


# --- Arrow helpers --------------------------------------------------------------------------
_ARROW_TYPES = {
    "id": pa.string(),
    "text": pa.string(),
    "code": pa.string(),
    "int": pa.int64(),
    "date": pa.date32(),
    "number": pa.float64(),
}
SCHEMAS = {
    name: pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind], nullable=True) for c in spec.columns])
    for name, spec in TABLES.items()
}


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """String ids prefix + number, built without a Python loop."""
    return pc.binary_join_element_wise(
        prefix, pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), ""
    )


def _dates(days: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.int32(), mask=missing).cast(pa.date32())


def _labels(values, codes: np.ndarray) -> pa.Array:
    return pa.array(list(values), type=pa.string()).take(pa.array(codes, type=pa.int32()))


def _table(name: str, columns: dict[str, pa.Array]) -> pa.Table:
    schema = SCHEMAS[name]
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


# --- Writers --------------------------------------------------------------------------------
class _CsvGzWriter:
    """Gzip CSV written practice by practice; zlib's gzip header carries no time or name."""

    suffix = ".csv.gz"

    def __init__(self, path: Path, schema: pa.Schema):
        self._file = open(path, "wb")
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self._write(schema.empty_table(), header=True)

    def _write(self, table: pa.Table, header: bool) -> None:
        buffer = pa.BufferOutputStream()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=header, **_CSV_OPTIONS))
        self._file.write(self._zip.compress(buffer.getvalue()))

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._write(table, header=False)

    def close(self) -> None:
        self._file.write(self._zip.flush())
        self._file.close()


class _ParquetWriter:
    suffix = ".parquet"

    def __init__(self, path: Path, schema: pa.Schema):
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


# --- Practices ------------------------------------------------------------------------------
def _split(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to weights that sum to total (largest remainder)."""
    exact = weights / weights.sum() * total
    sizes = np.floor(exact).astype(np.int64)
    short = total - int(sizes.sum())
    order = np.lexsort((np.arange(len(weights)), -(exact - sizes)))
    sizes[order[:short]] += 1
    return sizes


def _plan_practices(patients: int, practices: int, rng: np.random.Generator) -> list[_Practice]:
    regions = _choice(rng, REGION_SHARES, practices)
    systems = _choice(rng, SYSTEM_SHARES, practices)
    if practices >= 4:
        # Several regions and at least two systems, whatever the draw.
        if len(np.unique(regions)) < 3:
            regions[:3] = rng.choice(len(REGIONS), 3, replace=False)
        if len(np.unique(systems)) < 2:
            systems[-1] = 1 if systems[0] == 0 else 0
    weights = rng.lognormal(0.0, LIST_SIZE_SIGMA, practices)
    if patients >= practices:
        sizes = 1 + _split(patients - practices, weights)
    else:
        sizes = _split(patients, weights)
    deprivation = rng.uniform(1.0, 5.0, practices)
    rural = rng.random(practices) < np.where(
        regions == REGIONS.index("London"), 0.02, RURAL_PRACTICE_SHARE
    )
    consult = rng.lognormal(0.0, PRACTICE_CONSULT_SIGMA, practices)
    sp = rng.lognormal(0.0, PRACTICE_SP_SIGMA, practices)
    sp *= np.array([SYSTEM_SP_FACTOR[SYSTEMS[s]] for s in systems])
    sp /= max(float((sp * sizes).sum()) / max(sizes.sum(), 1), 1e-12)
    consult /= float((consult * sizes).sum()) / max(sizes.sum(), 1) or 1.0
    return [
        _Practice(
            i,
            f"P{i + 1:05d}",
            REGIONS[regions[i]],
            SYSTEMS[systems[i]],
            int(sizes[i]),
            float(deprivation[i]),
            bool(rural[i]),
            float(consult[i]),
            float(sp[i]),
        )
        for i in range(practices)
    ]


def _deliveries(plan: list[_Practice], extracted_at: date) -> list[tuple[str, list[_Practice]]]:
    out = []
    for system in SYSTEMS:
        members = [p for p in plan if p.system == system]
        for k in range(0, len(members), PRACTICES_PER_DELIVERY):
            delivery_id = (
                f"{extracted_at.isoformat()}_{system.lower()}_{k // PRACTICES_PER_DELIVERY + 1:03d}"
            )
            out.append((delivery_id, members[k : k + PRACTICES_PER_DELIVERY]))
    return out


# --- One block of patients of one practice --------------------------------------------------
@dataclass
class _People:
    """A block of patients: who they are and when they were registered (day numbers)."""

    birth: np.ndarray
    yob: np.ndarray
    sex: np.ndarray
    ethnicity: np.ndarray
    imd: np.ndarray
    imd_missing: np.ndarray
    rural_missing: np.ndarray
    frailty: np.ndarray
    homeless: np.ndarray
    start1: np.ndarray  # registration rows: start1..end1, then start2..end2 where has2
    end1: np.ndarray
    ended1: np.ndarray  # end1 is a real end date (left or died), not the extract date
    has2: np.ndarray
    start2: np.ndarray
    end2: np.ndarray
    ended2: np.ndarray
    death: np.ndarray  # NO_DATE when alive at the extract date
    spells: Spells  # registered time inside [HISTORY_START, extracted_at]
    person_days: np.ndarray
    age_mid: np.ndarray  # age in the middle of the registered time

    @property
    def imd_code(self) -> np.ndarray:
        """IMD quintile as an index into the _IMD_* factor arrays (0 for missing)."""
        return np.where(self.imd_missing, 0, self.imd)


def _people(setup: _Setup, prac: _Practice, n: int, rng: np.random.Generator) -> _People:
    """Demographics, registrations and deaths of n patients."""
    h0, x = setup.h0, setup.x
    # Age at the extract date, then an exact birth day (kept internal).
    band = _choice(rng, AGE_BAND_SHARES, n)
    birth = x - np.floor((band * 5 + rng.random(n) * 5) * 365.25).astype(np.int64)
    yob = _year_of(birth)
    sex = _choice(rng, SEX_SHARES, n)
    ethnicity = _choice(
        rng, ETHNICITY_SHARES_LONDON if prac.region == "London" else ETHNICITY_SHARES, n
    )
    imd = np.clip(np.rint(prac.deprivation + rng.normal(0.0, IMD_SPREAD, n)), 1, 5).astype(np.int64)
    imd_missing = rng.random(n) < IMD_MISSING
    rural_missing = rng.random(n) < RURAL_URBAN_MISSING
    frailty = rng.gamma(FRAILTY_SHAPE, 1.0 / FRAILTY_SHAPE, n)
    age_now = (x - birth) / 365.25
    homeless_w = np.where((age_now >= 18) & (age_now < 65), 1.0, 0.1) * (6 - imd) / 3.0
    homeless = rng.random(n) < HOMELESS_SHARE * homeless_w / homeless_w.mean()

    # Registrations: established before 2013, newcomers during the history, and births.
    newborn = birth >= h0
    newcomer = ~newborn & (rng.random(n) < NEWCOMER_SHARE)
    earliest = np.maximum(birth, _day(EARLIEST_REGISTRATION))
    start1 = earliest + np.floor(rng.random(n) * (h0 - earliest)).astype(np.int64)
    start1 = np.where(
        newcomer, h0 + np.floor(rng.random(n) * (x - h0 + 1)).astype(np.int64), start1
    )
    start1 = np.where(newborn, np.minimum(birth + rng.integers(0, 43, n), x), start1)
    s1 = np.maximum(start1, h0)  # registered time counts from the start of the history
    leave_rate = LEAVE_RATE * np.interp(
        (s1 - birth) / 365.25, [0, 15, 18, 35, 45, 65, 100], [1.0, 0.8, 1.8, 1.8, 0.8, 0.5, 0.5]
    )
    leave1 = s1 + np.floor(rng.exponential(365.25 / leave_rate)).astype(np.int64)
    ended1 = leave1 <= x
    end1 = np.where(ended1, leave1, x)
    start2 = end1 + REREGISTER_MIN_GAP + np.floor(rng.exponential(365.0, n)).astype(np.int64)
    has2 = ended1 & (rng.random(n) < REREGISTER_SHARE) & (start2 <= x)
    leave2 = start2 + np.floor(rng.exponential(365.25 / leave_rate)).astype(np.int64)
    ended2 = has2 & (leave2 <= x)
    start2 = np.where(has2, start2, 0)
    end2 = np.where(has2, np.where(ended2, leave2, x), -1)
    spells: Spells = [(s1, end1), (start2, end2)]  # the arrays are shortened in place below

    # Deaths, while registered, year by year; a death ends the registration.
    death = np.full(n, NO_DATE, dtype=np.int64)
    for year in setup.years:
        lo, hi = _day(date(year, 1, 1)), min(_day(date(year, 12, 31)), x)
        days = days_in(spells, lo, hi)
        p = -np.expm1(-_death_hazard((year - yob).astype(float)) * days / 365.25)
        dies = np.flatnonzero((death == NO_DATE) & (rng.random(n) < p))
        if len(dies) == 0:
            continue
        death[dies] = sample_in(rng, take(spells, dies), lo, hi)
        in1 = dies[death[dies] <= end1[dies]]
        in2 = dies[death[dies] > end1[dies]]
        end1[in1], ended1[in1] = death[in1], True
        has2[in1], ended2[in1], start2[in1], end2[in1] = False, False, 0, -1
        end2[in2], ended2[in2] = death[in2], True
    last_end = np.where(has2, end2, end1)
    return _People(
        birth=birth,
        yob=yob,
        sex=sex,
        ethnicity=ethnicity,
        imd=imd,
        imd_missing=imd_missing,
        rural_missing=rural_missing,
        frailty=frailty,
        homeless=homeless,
        start1=start1,
        end1=end1,
        ended1=ended1,
        has2=has2,
        start2=start2,
        end2=end2,
        ended2=ended2,
        death=death,
        spells=spells,
        person_days=days_in(spells, h0, x),
        age_mid=((s1 + last_end) // 2 - birth) / 365.25,
    )


@dataclass
class _SpEvents:
    """Social prescribing codes of a block: one entry per clinical event."""

    rows: np.ndarray  # patient row
    days: np.ndarray
    codes: np.ndarray  # index into SP_CODES
    in_consultation: np.ndarray  # recorded in a consultation of that patient and day
    ref1: np.ndarray  # per patient: first and second referral day, or NO_DATE
    ref2: np.ndarray


def _referral_weight(people: _People, prac: _Practice) -> np.ndarray:
    """What a patient's referral hazard owes to who they are and where, not to their use:
    age, sex, IMD and the practice's SP coding; mean 1 over the practice's person-time."""
    weight = (
        np.interp(people.age_mid, _AGE_KNOTS, _REFERRAL_AGE)
        * _IMD_REFERRAL[people.imd_code]
        * np.where(people.sex == SEXES.index("F"), 1.3, 1.0)
    )
    return _normalise(weight, people.person_days) * prac.sp_factor


def _yearly(
    setup: _Setup, rates: dict[int, float], scale: float = 1.0
) -> list[tuple[int, int, float]]:
    """(first day, last day, rate) of each calendar year of the history."""
    out = []
    for year in setup.years:
        rate = rates[min(max(year, min(rates)), max(rates))]
        out.append((_day(date(year, 1, 1)), min(_day(date(year, 12, 31)), setup.x), scale * rate))
    return out


def _attached(
    rng: np.random.Generator,
    visits: History,
    rows: np.ndarray,
    lo,
    hi,
    fallback: np.ndarray,
    share: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Days of events recorded, with probability `share`, in one of the patient's
    consultations in [lo, hi] (if there is one), otherwise on their own `fallback` day."""
    picked = visits.pick(rng, rows, lo, hi)
    attach = (picked != NO_DATE) & (rng.random(len(rows)) < share)
    return np.where(attach, picked, fallback), attach


def _sp_events(
    setup: _Setup,
    prac: _Practice,
    people: _People,
    ref1: np.ndarray,
    visits: History,
    rng: np.random.Generator,
) -> _SpEvents:
    """The SP codes around the referrals already drawn: each first referral is recorded in a
    consultation of its own on the day (added to the consultations); a second referral, and
    some declines, related referrals and homeless findings, are recorded in one of the
    patient's existing consultations, so none of them adds a consultation to the windows."""
    h0, x, spells, n = setup.h0, setup.x, people.spells, len(people.birth)
    weight = _referral_weight(people, prac)
    referred = np.flatnonzero(ref1 != NO_DATE)
    again = referred[rng.random(len(referred)) < SECOND_REFERRAL_SHARE]
    second = visits.pick(rng, again, ref1[again] + SECOND_REFERRAL_GAP, x)
    again, second = again[second != NO_DATE], second[second != NO_DATE]
    ref2 = np.full(n, NO_DATE, dtype=np.int64)
    ref2[again] = second
    decline_rows, decline_days, decline_attached = [], [], []
    for lo, hi, rate in _yearly(setup, REFERRAL_RATE, DECLINE_RATIO):
        hazard = rate * weight * days_in(spells, lo, hi) / 365.25
        dec = np.flatnonzero(rng.random(n) < -np.expm1(-hazard))
        days, attached = _attached(
            rng,
            visits,
            dec,
            lo,
            hi,
            sample_in(rng, take(spells, dec), lo, hi),
            SP_EVENT_IN_CONSULTATION,
        )
        decline_rows.append(dec)
        decline_days.append(days)
        decline_attached.append(attached)
    adult = (x - people.birth) / 365.25 >= 18
    related = np.flatnonzero(rng.random(n) < RELATED_REFERRAL_SHARE * np.where(adult, 1.15, 0.3))
    housed = np.flatnonzero(people.homeless)
    other_rows = np.concatenate([related, housed])
    other_days, other_attached = _attached(
        rng,
        visits,
        other_rows,
        h0,
        x,
        sample_in(rng, take(spells, other_rows), h0, x),
        SP_EVENT_IN_CONSULTATION,
    )
    rows = np.concatenate([referred, again, *decline_rows, other_rows])
    days = np.concatenate([ref1[referred], second, *decline_days, other_days])
    codes = np.concatenate(
        [
            np.full(len(referred) + len(again), 0),
            np.full(sum(len(d) for d in decline_rows), 1),
            2 + _choice(rng, RELATED_SHARES, len(related)),
            np.full(len(housed), 5),
        ]
    )
    in_consultation = np.concatenate(
        [np.ones(len(referred) + len(again), dtype=bool), *decline_attached, other_attached]
    )
    return _SpEvents(rows, days, codes, in_consultation, ref1, ref2)


@dataclass
class _Use:
    """A block's consultations and hospital attendances: (patient row, day) per event."""

    consultations: tuple[np.ndarray, np.ndarray]
    hospital: dict[str, tuple[np.ndarray, np.ndarray]]


def _rates(
    setup: _Setup,
    prac: _Practice,
    people: _People,
    high_use,
) -> dict[str, tuple[np.ndarray, float]]:
    """Each patient's rate per registered year outside spells, and the spell factor, for
    consultations and every hospital setting, calibrated so that the block's expected totals
    (spells included) give the domain brief's rates."""
    model, spells, person_days = setup.model, people.spells, people.person_days
    female, male = people.sex == SEXES.index("F"), people.sex == SEXES.index("M")
    age_sex = np.where(
        female,
        np.interp(people.age_mid, _AGE_KNOTS, _CONSULT_FEMALE),
        np.where(
            male,
            np.interp(people.age_mid, _AGE_KNOTS, _CONSULT_MALE),
            np.interp(people.age_mid, _AGE_KNOTS, (_CONSULT_MALE + _CONSULT_FEMALE) / 2),
        ),
    )
    base = people.frailty**0.8 * _IMD_AE[people.imd_code] * np.where(people.homeless, 3.0, 1.0)
    wanted = {
        "consultations": (
            age_sex * people.frailty * _IMD_CONSULT[people.imd_code],
            CONSULTATION_RATE * prac.consult_factor,
            model.spell_consultation_factor,
        ),
        "ae": (
            np.interp(people.age_mid, _AGE_KNOTS, _AE_AGE) * base,
            AE_RATE,
            model.spell_ae_factor,
        ),
    }
    for setting in ("emergency_admission", "elective_admission", "outpatient"):
        relative = np.interp(people.age_mid, _AGE_KNOTS, _HOSPITAL_AGE[setting])
        wanted[setting] = (
            relative * (base if setting != "outpatient" else 1.0),
            HOSPITAL_RATES[setting],
            model.spell_admission_factor if setting == "emergency_admission" else 1.0,
        )
    rates = {}
    for name, (relative, rate, factor) in wanted.items():
        exposure = expected_use_days(spells, person_days, high_use, factor)
        scale = rate * person_days.sum() / max(float((relative * exposure).sum()), 1e-12)
        rates[name] = (relative * scale, factor)
    return rates


def _use(
    setup: _Setup, prac: _Practice, people: _People, rng: np.random.Generator
) -> tuple[_Use, np.ndarray]:
    """Draw the causal model of `synthetic_process` for a block: use without referral, first
    referrals from the recorded history, then the effect of referral on the three outcomes.
    Returns the events of the world with referral and each patient's first referral day."""
    h0, x, model, spells = setup.h0, setup.x, setup.model, people.spells
    high_use = draw_spells(rng, model, len(people.birth), h0, x)
    rates = _rates(setup, prac, people, high_use)
    events = {
        name: use_events(rng, spells, high_use, rate, factor, h0, x)
        for name, (rate, factor) in rates.items()
    }
    ref1 = first_referrals(
        rng,
        spells,
        _referral_weight(people, prac),
        _yearly(setup, REFERRAL_RATE),
        History(*events["consultations"]),
        History(*events["ae"]),
    )
    for name in EFFECT_OUTCOMES:
        rate, factor = rates[name]
        events[name] = apply_effect(rng, spells, high_use, *events[name], rate, factor, ref1, model)
    return _Use(events.pop("consultations"), events), ref1


def _block(
    setup: _Setup,
    prac: _Practice,
    first: int,
    n: int,
    rng: np.random.Generator,
    counters: dict[str, int],
) -> dict[str, pa.Table]:
    """Patients `first+1 .. first+n` of a practice and all their rows, as contract tables."""
    h0, x = setup.h0, setup.x
    people = _people(setup, prac, n, rng)
    use, ref1 = _use(setup, prac, people, rng)
    plain_rows, plain_days = use.consultations
    sp = _sp_events(setup, prac, people, ref1, History(plain_rows, plain_days), rng)
    age_mid, rows_all = people.age_mid, np.arange(n)

    def in_order(rows: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Permutation putting events in patient, then date order."""
        return np.argsort(rows * (x - h0 + 1) + (days - h0), kind="stable")

    def numbers(table: str, count: int) -> np.ndarray:
        """The next `count` record numbers of a table within the practice."""
        start = counters[table]
        counters[table] += count
        return start + 1 + np.arange(count)

    # Consultations: the use process's, then one per first referral (its index consultation).
    index_visit = np.flatnonzero(sp.codes == 0)[: int((ref1 != NO_DATE).sum())]
    n_plain = len(plain_rows)
    c_rows = np.concatenate([plain_rows, sp.rows[index_visit]])
    c_days = np.concatenate([plain_days, sp.days[index_visit]])
    order = in_order(c_rows, c_days)
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    c_rows, c_days = c_rows[order], c_days[order]
    from_sp = order >= n_plain
    n_c = len(c_rows)
    old = age_mid[c_rows] >= 75
    mode = np.where(old, _choice(rng, MODE_SHARES_OLD, n_c), _choice(rng, MODE_SHARES, n_c))
    role = _choice(rng, ROLE_SHARES, n_c)
    after_referral = ((c_days > sp.ref1[c_rows]) & (c_days <= sp.ref1[c_rows] + WINDOW_DAYS)) | (
        (c_days > sp.ref2[c_rows]) & (c_days <= sp.ref2[c_rows] + WINDOW_DAYS)
    )
    link = after_referral & ~from_sp & (rng.random(n_c) < LINK_WORKER_SHARE)
    role[link] = STAFF_ROLES.index("link_worker")
    mode[link] = _choice(rng, (0.55, 0.4, 0.05), int(link.sum()))
    mode[from_sp] = _choice(rng, (0.7, 0.3), int(from_sp.sum()))
    consult_no = numbers("consultations", n_c)
    # Each SP event recorded in a consultation names one: its own index consultation, or the
    # first consultation of the patient that day (which exists: the day was picked from them).
    sp_consult_no = np.full(len(sp.rows), -1, dtype=np.int64)
    sp_consult_no[index_visit] = consult_no[position[n_plain:]]
    attached = np.flatnonzero(sp.in_consultation)
    attached = attached[~np.isin(attached, index_visit)]
    keys = c_rows.astype(np.int64) * (x - h0 + 2) + (c_days - h0)
    found = np.searchsorted(keys, sp.rows[attached] * (x - h0 + 2) + (sp.days[attached] - h0))
    sp_consult_no[attached] = consult_no[found]

    # Clinical events: background codes in some consultations, plus the SP codes.
    b_pos = np.flatnonzero(~from_sp & (rng.random(n_c) < BACKGROUND_EVENT_SHARE))
    b_rows = c_rows[b_pos]
    code_w = (
        np.column_stack(
            [np.interp(age_mid, _AGE_KNOTS, _CODE_AGE[:, k]) for k in range(len(BACKGROUND_CODES))]
        )
        + 1e-3
    )
    code_w[rows_all, _choice(rng, np.ones(len(BACKGROUND_CODES)), n)] *= MAIN_CONDITION_BOOST
    cum = np.cumsum(code_w[b_rows], axis=1)
    b_code = (cum < (rng.random(len(b_rows)) * cum[:, -1])[:, None]).sum(axis=1)
    value = np.full(len(b_rows), np.nan)
    for code, (share, mean, sd, low, high) in {
        0: (0.4, 138.0, 16.0, 80.0, 230.0),  # systolic blood pressure, mmHg
        1: (0.4, 56.0, 13.0, 30.0, 150.0),  # HbA1c, mmol/mol
        3: (0.15, 12.0, 6.0, 0.0, 27.0),  # PHQ-9 score
        4: (0.15, 10.0, 5.0, 0.0, 21.0),  # GAD-7 score
    }.items():
        pick = np.flatnonzero((b_code == code) & (rng.random(len(b_rows)) < share))
        value[pick] = np.clip(np.rint(rng.normal(mean, sd, len(pick))), low, high)
    e_rows = np.concatenate([b_rows, sp.rows])
    e_days = np.concatenate([c_days[b_pos], sp.days])
    order = in_order(e_rows, e_days)
    e_rows, e_days = e_rows[order], e_days[order]
    e_code = np.concatenate([b_code, len(BACKGROUND_CODES) + sp.codes])[order]
    e_consult = np.concatenate([consult_no[b_pos], sp_consult_no])[order]
    e_value = np.concatenate([value, np.full(len(sp.rows), np.nan)])[order]

    # Hospital attendances: every setting of the use process (the effect in A&E and emergency
    # admissions), plus a little noise dated outside registered time.
    a_rows, a_days, a_setting = [], [], []
    for setting in ATTENDANCE_SETTINGS:
        r, d = use.hospital[setting]
        a_rows.append(r)
        a_days.append(d)
        a_setting.append(np.full(len(r), ATTENDANCE_SETTINGS.index(setting)))
    # Noise: a few attendances dated in the patient's life but outside registered time.
    last_end = np.where(people.has2, people.end2, people.end1)
    outside: Spells = [
        (np.maximum(h0, people.birth), people.start1 - 1),
        (np.where(people.has2, people.end1 + 1, 0), np.where(people.has2, people.start2 - 1, -1)),
        (last_end + 1, np.where(people.death != NO_DATE, people.death, x)),
    ]
    outside_days = days_in(outside, h0, x)
    n_in = sum(len(r) for r in a_rows)
    n_noise = rng.binomial(n_in, OUTSIDE_REGISTRATION_SHARE / (1 - OUTSIDE_REGISTRATION_SHARE))
    if n_noise and outside_days.sum() > 0:
        r = rng.choice(n, size=n_noise, p=outside_days / outside_days.sum())
        a_rows.append(r)
        a_days.append(sample_in(rng, take(outside, r), h0, x))
        a_setting.append(
            np.concatenate(a_setting)[rng.integers(0, n_in, n_noise)]
            if n_in
            else np.zeros(n_noise, dtype=np.int64)
        )
    a_rows, a_days, a_setting = (np.concatenate(a) for a in (a_rows, a_days, a_setting))
    order = in_order(a_rows, a_days)
    a_rows, a_days, a_setting = a_rows[order], a_days[order], a_setting[order]

    # Registration rows: the first spell for everyone, then returns, in patient order.
    has2 = people.has2
    r_rows = np.concatenate([rows_all, np.flatnonzero(has2)])
    order = np.argsort(r_rows * 2 + (np.arange(len(r_rows)) >= n), kind="stable")
    r_rows = r_rows[order]
    r_start = np.concatenate([people.start1, people.start2[has2]])[order]
    r_end = np.concatenate([people.end1, people.end2[has2]])[order]
    r_open = ~np.concatenate([people.ended1, people.ended2[has2]])[order]

    # Arrow tables with opaque, globally unique string ids.
    pid = prac.practice_id
    patient_ids = _ids(f"{pid}-", first + 1 + rows_all)

    def who(rows: np.ndarray) -> dict[str, pa.Array]:
        return {
            "patient_id": patient_ids.take(pa.array(rows, type=pa.int64())),
            "practice_id": pa.repeat(pid, len(rows)),
        }

    dead = people.death != NO_DATE
    return {
        "patients": _table(
            "patients",
            {
                **who(rows_all),
                "year_of_birth": pa.array(people.yob, type=pa.int64()),
                "sex": _labels(SEXES, people.sex),
                "ethnicity": _labels(ETHNICITIES, people.ethnicity),
                "imd_quintile": pa.array(people.imd, type=pa.int64(), mask=people.imd_missing),
                "rural_urban": pa.array(
                    np.full(n, "rural" if prac.rural else "urban"),
                    type=pa.string(),
                    mask=people.rural_missing,
                ),
                "date_of_death": _dates(np.where(dead, people.death, 0), ~dead),
            },
        ),
        "registrations": _table(
            "registrations",
            {
                "registration_id": _ids(f"{pid}-R", numbers("registrations", len(r_rows))),
                **who(r_rows),
                "start_date": _dates(r_start),
                "end_date": _dates(np.where(r_open, 0, r_end), r_open),
            },
        ),
        "consultations": _table(
            "consultations",
            {
                "consultation_id": _ids(f"{pid}-C", consult_no),
                **who(c_rows),
                "consultation_date": _dates(c_days),
                "mode": _labels(CONSULTATION_MODES, mode),
                "staff_role": _labels(STAFF_ROLES, role),
            },
        ),
        "clinical_events": _table(
            "clinical_events",
            {
                "event_id": _ids(f"{pid}-E", numbers("clinical_events", len(e_rows))),
                **who(e_rows),
                "event_date": _dates(e_days),
                "snomed_code": _labels(BACKGROUND_CODES + SP_CODES, e_code),
                "consultation_id": pc.if_else(
                    pa.array(e_consult < 0),
                    pa.scalar(None, pa.string()),
                    _ids(f"{pid}-C", np.maximum(e_consult, 0)),
                ),
                "numeric_value": pa.array(e_value, type=pa.float64(), from_pandas=True),
            },
        ),
        "hospital_attendances": _table(
            "hospital_attendances",
            {
                "attendance_id": _ids(f"{pid}-H", numbers("hospital_attendances", len(a_rows))),
                **who(a_rows),
                "attendance_date": _dates(a_days),
                "setting": _labels(ATTENDANCE_SETTINGS, a_setting),
            },
        ),
    }


# --- Entry point ----------------------------------------------------------------------------
def generate(
    out_dir: Path,
    patients: int = 20_000,
    practices: int = 20,
    seed: int = 42,
    extracted_at: date = date(2020, 1, 31),
    model: CausalModel | None = None,
    progress: Callable[[str], None] | None = None,
) -> GenerationSummary:
    """Write synthetic full deliveries under `out_dir`, one directory per delivery.

    `model` is the causal model of `synthetic_process`; `model.effect` is the true rate ratio
    of referral (the default model when None). The same arguments give byte-identical files. Existing files of a delivery with the same
    id are replaced; other contents of `out_dir` are left alone.
    """
    if patients < 1 or practices < 1:
        raise ValueError("patients and practices must both be at least 1")
    if extracted_at <= HISTORY_START:
        raise ValueError(f"extracted_at must be after {HISTORY_START.isoformat()}")
    model = model if model is not None else CausalModel()
    model.check()
    out_dir = Path(out_dir)
    x = _day(extracted_at)
    setup = _Setup(
        h0=_day(HISTORY_START),
        x=x,
        study_start=_day(STUDY_START),
        study_end=min(_day(STUDY_END), x),
        years=tuple(range(HISTORY_START.year, extracted_at.year + 1)),
        model=model,
    )
    plan = _plan_practices(patients, practices, np.random.default_rng(np.random.SeedSequence(seed)))
    rows = {table: 0 for table in TABLES}
    delivery_ids = []
    done = 0
    for delivery_id, members in _deliveries(plan, extracted_at):
        directory = out_dir / delivery_id
        directory.mkdir(parents=True, exist_ok=True)
        system = members[0].system
        writer_class = _CsvGzWriter if system in CSV_SYSTEMS else _ParquetWriter
        for stale in [
            MANIFEST_NAME,
            *(t + suffix for t in TABLES for suffix in (".csv.gz", ".parquet")),
        ]:
            (directory / stale).unlink(missing_ok=True)
        paths = {t: directory / f"{t}{writer_class.suffix}" for t in TABLES}
        writers = {t: writer_class(paths[t], SCHEMAS[t]) for t in TABLES}
        counts = {t: 0 for t in TABLES}
        try:
            practices_table = _table(
                "practices",
                {
                    "practice_id": pa.array([p.practice_id for p in members], type=pa.string()),
                    "region": pa.array([p.region for p in members], type=pa.string()),
                },
            )
            writers["practices"].write(practices_table)
            counts["practices"] = practices_table.num_rows
            for prac in members:
                counters = {
                    t: 0
                    for t in (
                        "registrations",
                        "consultations",
                        "clinical_events",
                        "hospital_attendances",
                    )
                }
                for block, first in enumerate(range(0, prac.size, BLOCK_PATIENTS)):
                    rng = np.random.default_rng(
                        np.random.SeedSequence(seed, spawn_key=(prac.index, block))
                    )
                    n = min(BLOCK_PATIENTS, prac.size - first)
                    for table, data in _block(setup, prac, first, n, rng, counters).items():
                        writers[table].write(data)
                        counts[table] += data.num_rows
        finally:
            for writer in writers.values():
                writer.close()
        write_manifest(
            directory,
            {
                "contract_version": CONTRACT_VERSION,
                "delivery_id": delivery_id,
                "extracted_at": extracted_at.isoformat(),
                "kind": "full",
                "source_system": system,
                "practices": [p.practice_id for p in members],
                "files": {t: file_entry(paths[t], counts[t]) for t in TABLES},
            },
        )
        for table, count in counts.items():
            rows[table] += count
        delivery_ids.append(delivery_id)
        if progress is not None:
            progress(
                f"practices {done + 1}-{done + len(members)} of {practices} written ({delivery_id})"
            )
        done += len(members)
    return GenerationSummary(
        out_dir=out_dir, deliveries=delivery_ids, patients=patients, practices=practices, rows=rows
    )
