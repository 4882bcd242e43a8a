"""The causal model behind the synthetic extract: who uses services when, who is referred, and
what referral does.

`synthetic.generate` draws a population and its registrations, then asks this module for the
events. The model, in the order it is drawn for each patient *i*:

1. **Frailty** `f_i ~ Gamma(1.3, 1/1.3)` (mean 1), fixed for life: it scales every rate.
2. **Spells of high use**: episodes start as a Poisson process, `spell_onset_per_year` a year,
   and last a Gamma-distributed time (`spell_shape`, mean `spell_mean_days`). During a spell
   the patient's consultation rate is multiplied by `spell_consultation_factor`, A&E by
   `spell_ae_factor` and emergency admissions by `spell_admission_factor`. Spells end by
   themselves: nothing in the model ends them.
3. **Use without referral** (the counterfactual world): consultations, A&E attendances and
   emergency admissions are Poisson processes on registered days with rate
   `baseline_i * (1 + (factor - 1) * spells active that day)`, where the baseline carries
   age, sex, IMD, frailty and the practice.
4. **Referral** to social prescribing: a hazard in calendar time,
   `rate(year) * w_i * pull(history_i(t)) / MEAN_PULL`, where `w_i` is age, sex, IMD and the
   practice's coding intensity and `pull` rises steeply with the consultations the patient
   had in the 90 days before *t*, and less with those of the rest of the year and A&E
   attendances in the year (`referral_pull`). Because spells raise recent use, referral is far
   more likely during a spell, and a referred patient's spell then ends by itself: the
   regression to the mean that a before/after comparison mistakes for an effect. The GP sees
   the patient's recorded history, not the spell: given that history (and age, sex, IMD,
   practice), referral does not depend on frailty or spells. That is the assumption under
   which a comparison matched on recorded recent use is unbiased (docs/methods.md), and the
   generator makes it true on purpose, so that a design can be tested against it.
   The patient's first referral is drawn by thinning: candidate days at the hazard's bound,
   each kept with probability `pull / PULL_MAX`. A consultation on the referral day records
   it (the index consultation, outside both windows).
5. **The true causal effect**: for `effect_days` after the first referral, each of the three
   measured outcomes has rate `effect * (the same patient's rate without referral)`. Events
   of the counterfactual world in that window are kept with probability `effect` (or, for an
   effect above 1, joined by events of a process at `(effect - 1)` times the rate). So
   `effect` is the rate ratio of the referred after referral against themselves unreferred:
   the estimand of `sp_effect_estimates` row `effect`.

Everything works on arrays of a block of patients: no Python loop runs per patient or event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Registered time of a block as spells (start, end) of day-number arrays, inclusive; an empty
# spell has end < start. The helpers work on per-patient or per-segment arrays.
Spells = list[tuple[np.ndarray, np.ndarray]]
NO_DATE = -(10**9)  # "no such date" in day-number arrays

# --- The referral hazard's pull of recent use ------------------------------------------------
RECENT_DAYS = 90  # "recent": the 90 days before the day
YEAR_DAYS = 365
_PULL_CAPS = (12, 24, 4)  # consultations 90 d, rest of year, A&E in the year
PULL_MAX = (1 + _PULL_CAPS[0]) * (1 + _PULL_CAPS[1] / 4) ** 0.5 * (1 + _PULL_CAPS[2]) ** 0.5
# Mean pull over registered person-time of the default population, measured once (seed 42,
# 200,000 patients) so that referral rates keep the yearly levels of `REFERRAL_RATE`.
MEAN_PULL = 5.6


def referral_pull(recent: np.ndarray, rest_of_year: np.ndarray, ae_year: np.ndarray) -> np.ndarray:
    """How much a patient's recorded history draws a referral: 1 for someone who never
    consults, about 6 on average, up to `PULL_MAX` for the heaviest recent users."""
    return (
        (1 + np.minimum(recent, _PULL_CAPS[0]))
        * (1 + np.minimum(rest_of_year, _PULL_CAPS[1]) / 4) ** 0.5
        * (1 + np.minimum(ae_year, _PULL_CAPS[2])) ** 0.5
    )


@dataclass(frozen=True)
class CausalModel:
    """The parameters of the model above; `effect` is the true causal rate ratio."""

    effect: float = 0.85  # post-referral rate / counterfactual rate, all 3 outcomes
    effect_days: int = 365  # how long it lasts after the referral day
    spell_onset_per_year: float = 0.3
    spell_mean_days: float = 90.0
    spell_shape: float = 2.0
    spell_consultation_factor: float = 4.0
    spell_ae_factor: float = 2.5
    spell_admission_factor: float = 2.0

    def check(self) -> None:
        """Refuse parameters that define no process."""
        if not self.effect > 0:
            raise ValueError(f"effect must be above 0 (got {self.effect})")
        if self.effect_days < 1 or self.spell_mean_days <= 0 or self.spell_shape <= 0:
            raise ValueError("effect_days, spell_mean_days and spell_shape must be positive")
        if self.spell_onset_per_year < 0:
            raise ValueError("spell_onset_per_year must not be negative")
        factors = (
            self.spell_consultation_factor,
            self.spell_ae_factor,
            self.spell_admission_factor,
        )
        if min(factors) < 1:
            raise ValueError("spell factors must be at least 1 (a spell is high use)")


# --- Registered time ---------------------------------------------------------------------------
def days_in(spells: Spells, lo, hi) -> np.ndarray:
    """Days of the spells inside [lo, hi] (scalars or arrays aligned with the spells)."""
    total = 0
    for start, end in spells:
        total = total + np.maximum(np.minimum(end, hi) - np.maximum(start, lo) + 1, 0)
    return np.asarray(total, dtype=np.int64)


def sample_in(rng: np.random.Generator, spells: Spells, lo, hi) -> np.ndarray:
    """One uniformly drawn day of the spells inside [lo, hi], per row (each must have one)."""
    clipped = []
    for start, end in spells:
        first = np.maximum(start, lo)
        clipped.append((first, np.maximum(np.minimum(end, hi) - first + 1, 0)))
    total = sum(length for _, length in clipped)
    rest = (rng.random(len(total)) * total).astype(np.int64)
    out = np.zeros(len(total), dtype=np.int64)
    done = np.zeros(len(total), dtype=bool)
    for first, length in clipped:
        hit = ~done & (rest < length)
        out[hit] = (first + rest)[hit]
        done |= hit
        rest = np.where(done, rest, rest - length)
    return out


def take(spells: Spells, idx: np.ndarray) -> Spells:
    return [(start[idx], end[idx]) for start, end in spells]


def poisson_days(
    rng: np.random.Generator, spells: Spells, rows: np.ndarray, rate: np.ndarray, lo, hi
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson events on registered days of segments [lo, hi] of patients `rows`, at `rate`
    per registered year (all aligned with `rows`): (patient row, day) per event."""
    segments = take(spells, rows)
    counts = rng.poisson(rate * days_in(segments, lo, hi) / 365.25)
    which = np.repeat(np.arange(len(rows)), counts)
    lo_rows = lo[which] if isinstance(lo, np.ndarray) else lo
    hi_rows = hi[which] if isinstance(hi, np.ndarray) else hi
    return rows[which], sample_in(rng, take(segments, which), lo_rows, hi_rows)


# --- Spells of high use ----------------------------------------------------------------------
@dataclass(frozen=True)
class HighUseSpells:
    """Every spell of a block: its patient row and first and last day (inclusive)."""

    rows: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def registered_days(self, spells: Spells) -> np.ndarray:
        """Registered days inside spells, per patient of the block (length = patients)."""
        n = len(spells[0][0])
        inside = days_in(take(spells, self.rows), self.start, self.end)
        return np.bincount(self.rows, weights=inside, minlength=n)

    def active(self, rows: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Whether each (patient row, day) falls in one of the patient's spells: spells that
        started on or before the day outnumber those that ended before it."""
        starts = np.sort(_key(self.rows, self.start))
        ends = np.sort(_key(self.rows, self.end))
        started = np.searchsorted(starts, _key(rows, days), side="right")
        ended = np.searchsorted(ends, _key(rows, days), side="left")
        return started > ended


def _key(rows: np.ndarray, days: np.ndarray) -> np.ndarray:
    """One sortable integer per (patient row, day): rows first, then days."""
    return rows.astype(np.int64) * (1 << 32) + (np.asarray(days, dtype=np.int64) - NO_DATE)


def draw_spells(
    rng: np.random.Generator, model: CausalModel, n: int, first_day: int, last_day: int
) -> HighUseSpells:
    """Spells of n patients over [first_day, last_day], starting earlier if they run into it."""
    lead = int(3 * model.spell_mean_days)
    span = last_day - first_day + 1 + lead
    counts = rng.poisson(model.spell_onset_per_year * span / 365.25, n)
    rows = np.repeat(np.arange(n), counts)
    start = first_day - lead + np.floor(rng.random(len(rows)) * span).astype(np.int64)
    length = np.ceil(
        rng.gamma(model.spell_shape, model.spell_mean_days / model.spell_shape, len(rows))
    ).astype(np.int64)
    return HighUseSpells(rows, start, start + np.maximum(length, 1) - 1)


def use_events(
    rng: np.random.Generator,
    spells: Spells,
    high_use: HighUseSpells,
    rate: np.ndarray,
    factor: float,
    lo: int,
    hi: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Events of a Poisson process at `rate` a registered year (per patient), times `factor`
    on spell days, over [lo, hi]: the world without referral."""
    n = len(rate)
    rows, days = poisson_days(rng, spells, np.arange(n), rate, lo, hi)
    if factor > 1 and len(high_use.rows):
        s_rows, s_days = poisson_days(
            rng,
            spells,
            high_use.rows,
            (factor - 1) * rate[high_use.rows],
            np.maximum(high_use.start, lo),
            np.minimum(high_use.end, hi),
        )
        rows, days = np.concatenate([rows, s_rows]), np.concatenate([days, s_days])
    return rows, days


def expected_use_days(
    spells: Spells, person_days: np.ndarray, high_use: HighUseSpells, factor: float
) -> np.ndarray:
    """Registered days weighted by the spell factor, per patient: what a rate multiplies."""
    return person_days + (factor - 1) * high_use.registered_days(spells)


# --- The recorded history and referral -----------------------------------------------------
class History:
    """Counts of a block's recorded events in windows before a day, from sorted keys."""

    def __init__(self, rows: np.ndarray, days: np.ndarray):
        self._keys = np.sort(_key(rows, days))

    def count(self, rows: np.ndarray, lo, hi) -> np.ndarray:
        """Events of each patient row with a day in [lo, hi]."""
        return np.searchsorted(self._keys, _key(rows, hi), side="right") - np.searchsorted(
            self._keys, _key(rows, lo), side="left"
        )

    def pick(self, rng: np.random.Generator, rows: np.ndarray, lo, hi) -> np.ndarray:
        """A uniformly chosen event day of each row in [lo, hi], or NO_DATE if it has none."""
        first = np.searchsorted(self._keys, _key(rows, lo), side="left")
        stop = np.searchsorted(self._keys, _key(rows, hi), side="right")
        has = stop > first
        at = first + np.floor(rng.random(len(rows)) * np.maximum(stop - first, 1)).astype(np.int64)
        picked = self._keys[np.minimum(at, len(self._keys) - 1)] if len(self._keys) else at
        return np.where(has, (picked & ((1 << 32) - 1)) + NO_DATE, NO_DATE)


def first_referrals(
    rng: np.random.Generator,
    spells: Spells,
    weight: np.ndarray,
    yearly: list[tuple[int, int, float]],
    consultations: History,
    ae: History,
) -> np.ndarray:
    """Each patient's first referral day (or NO_DATE), drawn by thinning the hazard
    `rate(year) * weight * referral_pull(history) / MEAN_PULL`."""
    n = len(weight)
    first = np.full(n, NO_DATE, dtype=np.int64)
    everyone = np.arange(n)
    for lo, hi, rate in yearly:  # calendar years in order: the first kept is first
        open_ = everyone[first == NO_DATE]
        rows, days = poisson_days(
            rng, spells, open_, rate * weight[open_] * PULL_MAX / MEAN_PULL, lo, hi
        )
        if len(rows) == 0:
            continue
        pull = referral_pull(
            consultations.count(rows, days - RECENT_DAYS, days - 1),
            consultations.count(rows, days - YEAR_DAYS, days - RECENT_DAYS - 1),
            ae.count(rows, days - YEAR_DAYS, days - 1),
        )
        kept = rng.random(len(rows)) < pull / PULL_MAX
        rows, days = rows[kept], days[kept]
        if len(rows) == 0:
            continue
        order = np.lexsort((days, rows))
        rows, days = rows[order], days[order]
        lead = np.r_[True, rows[1:] != rows[:-1]]
        first[rows[lead]] = days[lead]
    return first


def apply_effect(
    rng: np.random.Generator,
    spells: Spells,
    high_use: HighUseSpells,
    rows: np.ndarray,
    days: np.ndarray,
    rate: np.ndarray,
    factor: float,
    referral: np.ndarray,
    model: CausalModel,
) -> tuple[np.ndarray, np.ndarray]:
    """The events of the world with referral: in the `effect_days` after each patient's first
    referral, the rate is `effect` times the rate without it."""
    start = referral[rows]
    in_window = (start != NO_DATE) & (days > start) & (days <= start + model.effect_days)
    if model.effect <= 1.0:
        # One uniform per event whatever the effect, so that extracts of one seed and
        # different effects share the world without referral event for event.
        keep = ~in_window | (rng.random(len(rows)) < model.effect)
        return rows[keep], days[keep]
    referred = np.flatnonzero(referral != NO_DATE)
    lo, hi = referral[referred] + 1, referral[referred] + model.effect_days
    extra = use_events_between(
        rng, spells, high_use, rate, factor, referred, lo, hi, model.effect - 1.0
    )
    return np.concatenate([rows, extra[0]]), np.concatenate([days, extra[1]])


def use_events_between(
    rng: np.random.Generator,
    spells: Spells,
    high_use: HighUseSpells,
    rate: np.ndarray,
    factor: float,
    patients: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Events at `scale` times the use process, only inside [lo, hi] of each listed patient."""
    rows, days = poisson_days(rng, spells, patients, scale * rate[patients], lo, hi)
    if factor > 1 and len(high_use.rows):
        window_of = np.full(len(rate), -1, dtype=np.int64)
        window_of[patients] = np.arange(len(patients))
        w = window_of[high_use.rows]
        mine = np.flatnonzero(w >= 0)
        s_lo = np.maximum(high_use.start[mine], lo[w[mine]])
        s_hi = np.minimum(high_use.end[mine], hi[w[mine]])
        s_rows, s_days = poisson_days(
            rng,
            spells,
            high_use.rows[mine],
            scale * (factor - 1) * rate[high_use.rows[mine]],
            s_lo,
            s_hi,
        )
        rows, days = np.concatenate([rows, s_rows]), np.concatenate([days, s_days])
    return rows, days
