"""Statistical disclosure control (SDC): the rules every released number passes through.

Security-sensitive and kept small on purpose, like OpenSAFELY's `disclosure_control.py`:
named constants and pure functions, no I/O. A count (of patients, events, rows, or
practices, deliveries) of 7 or fewer is redacted; any other is rounded to the nearest 5.
Person-time is not a count of anyone, but it is redacted under the same threshold and
otherwise rounded to a whole person-year (rounding it to 5 would move a rate ratio by about
1% on a cohort of 500 patients, a fifth of its confidence interval). Rates and ratios are
then recomputed from the rounded values, never taken from the exact ones.

>>> apply_sdc(3), apply_sdc(8), apply_sdc(12), apply_sdc(13), apply_person_time_sdc(417.4)
(None, 10, 10, 15, 417)
"""

from __future__ import annotations

import math

SUPPRESSION_THRESHOLD = 7
ROUNDING_MULTIPLE = 5
PERSON_TIME_ROUNDING = 1
# Appended to the name of every released column whose values went through apply_sdc, and
# through apply_person_time_sdc.
ROUNDED_SUFFIX = f"_rounded{ROUNDING_MULTIPLE}"
PERSON_TIME_SUFFIX = f"_rounded{PERSON_TIME_ROUNDING}"


def _redact_or_round(value: float | None, multiple: int) -> int | None:
    if value is None or value <= SUPPRESSION_THRESHOLD:
        return None
    rounded = int(multiple * math.floor(value / multiple + 0.5))
    return rounded if rounded > SUPPRESSION_THRESHOLD else None


def apply_sdc(value: float | None) -> int | None:
    """The releasable form of a count: None (redacted) when missing or at most 7, else the
    nearest multiple of 5 (halves up)."""
    return _redact_or_round(value, ROUNDING_MULTIPLE)


def apply_person_time_sdc(value: float | None) -> int | None:
    """The releasable form of person-time: None when missing or at most 7 person-years, else
    the nearest whole person-year (a rounded 7 is redacted too: 7.4 cannot come out as 7)."""
    return _redact_or_round(value, PERSON_TIME_ROUNDING)


def rate(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    """scale * numerator / denominator from released values; None if either is redacted."""
    if numerator is None or not denominator:
        return None
    return scale * numerator / denominator


def interval(
    estimate: float | None, log_se: float | None, z: float = 1.959963985
) -> tuple[float | None, float | None]:
    """The 95% interval estimate * exp(-+z * se) around an estimate recomputed from rounded
    counts, with the standard error of its log from the exact model."""
    if estimate is None or log_se is None or estimate <= 0:
        return None, None
    return estimate * math.exp(-z * log_se), estimate * math.exp(z * log_se)


MODEL_RATIO_DECIMALS = 2
DESIGN_EFFECT_DECIMALS = 1


def round_model_ratio(value: float | None) -> float | None:
    """A model's ratio that cannot be recomputed from released counts, to 2 decimals."""
    return None if value is None else round(value, MODEL_RATIO_DECIMALS)


def poisson_log_variance(*counts: float | None) -> float | None:
    """sum 1/E over the counts behind a log rate or log rate ratio: its variance if the
    counts were Poisson. None if any count is missing (redacted) or 0."""
    if any(not count for count in counts):
        return None
    return sum(1.0 / count for count in counts)


def design_effect(exact_log_se: float | None, *exact_counts: float | None) -> float | None:
    """How much the robust variance exceeds the Poisson one (overdispersion and the
    correlation of matched sets), to 1 decimal and at least 0.1: the one fact about the
    exact data that a released interval adds to the rounded counts."""
    poisson = poisson_log_variance(*exact_counts)
    if exact_log_se is None or poisson is None:
        return None
    return max(
        round(exact_log_se**2 / poisson, DESIGN_EFFECT_DECIMALS), 10.0**-DESIGN_EFFECT_DECIMALS
    )


def released_log_se(effect: float | None, *rounded_counts: float | None) -> float | None:
    """The standard error a release gives: the Poisson one of the rounded counts, times the
    rounded design effect. It is a function of released values only, so it cannot give back
    a count that rounding hid."""
    poisson = poisson_log_variance(*rounded_counts)
    if effect is None or poisson is None:
        return None
    return round(math.sqrt(effect * poisson), 6)


RULES = [
    f"counts of patients, events, rows, practices and deliveries of {SUPPRESSION_THRESHOLD} "
    "or fewer are redacted (left empty)",
    f"all other counts are rounded to the nearest {ROUNDING_MULTIPLE} and their column "
    f"names end in '{ROUNDED_SUFFIX}'",
    f"person-years of {SUPPRESSION_THRESHOLD} or fewer are redacted, others rounded to the "
    f"nearest whole person-year, in columns ending in '{PERSON_TIME_SUFFIX}'",
    "rates, ratios, shares and percentages are recomputed from the rounded counts; one "
    "whose inputs are redacted is redacted",
    "a standard error (log_se) is recomputed from the rounded counts: the Poisson one, "
    "sum 1/E, times the design effect (robust over Poisson variance) released to "
    f"{DESIGN_EFFECT_DECIMALS} decimal; it is empty wherever an input count is redacted, and "
    "the 95% interval is computed from the released estimate and log_se",
    f"an estimate the rounded counts cannot give back (the Mantel-Haenszel effect) is "
    f"released to {MODEL_RATIO_DECIMALS} decimals, only when none of its input counts is "
    "redacted",
    "a covariate's mean or share in a group is released only over more than "
    f"{SUPPRESSION_THRESHOLD} people (for a share, more than {SUPPRESSION_THRESHOLD} with "
    "the level and without it): shares recomputed from rounded counts (the controls' "
    "weighted share to 2 decimals), means and standard deviations to 1 decimal; "
    "standardised differences are recomputed from those released values",
    "no patient-level or practice-level table is ever released",
]
