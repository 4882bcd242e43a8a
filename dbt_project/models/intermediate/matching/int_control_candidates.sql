-- The candidates each case may draw controls from, in the order it draws them: eligible
-- pairs (int_trial_pairs) whose recent use as of t falls in the case's bands of
-- `matching_bands` (consultations in the recent 90 days, in the rest of the pre window, and
-- A&E attendances in the pre window), or within `matching_band_tolerance` bands of them,
-- nearest first. Distance: 3 x |consultations_recent
-- difference| + |consultations_earlier difference| + 3 x |A&E difference| (the earlier window
-- is three times longer, so three of its consultations weigh as one recent one); ties in a
-- seeded order.

with pairs as (
    select * from {{ ref('int_trial_pairs') }} where {{ in_build_scope() }}
),

cases as (
    select * from {{ ref('int_trial_cases') }}
    where {{ in_build_scope() }} and ineligible_reason is null
),

baselines as (
    select * from {{ ref('int_trial_baselines') }} where {{ in_build_scope() }}
)

select
    pairs.practice_id,
    pairs.case_patient_id,
    pairs.index_date,
    pairs.control_patient_id,
    cases.case_order,
    3 * abs(case_use.consultations_recent - control_use.consultations_recent)
        + abs(case_use.consultations_earlier - control_use.consultations_earlier)
        + 3 * abs(case_use.ae_attendances_pre - control_use.ae_attendances_pre) as distance,
    {{ seeded_number(
        "'" ~ var('matching_seed') ~ "|' || pairs.practice_id"
        ~ " || '|' || pairs.case_patient_id || '|' || pairs.control_patient_id"
    ) }}
        as control_order
from pairs
inner join cases
    on cases.practice_id = pairs.practice_id
    and cases.patient_id = pairs.case_patient_id
inner join baselines as case_use
    on case_use.practice_id = pairs.practice_id
    and case_use.patient_id = pairs.case_patient_id
    and case_use.trial_date = pairs.index_date
inner join baselines as control_use
    on control_use.practice_id = pairs.practice_id
    and control_use.patient_id = pairs.control_patient_id
    and control_use.trial_date = pairs.index_date
where
    {%- for column in ['consultations_recent', 'consultations_earlier', 'ae_attendances_pre'] %}
    abs({{ use_band('case_use.' ~ column, column) }} - {{ use_band('control_use.' ~ column, column) }})
        <= {{ var('matching_band_tolerance')[column] }}
    {{- ' and' if not loop.last }}
    {%- endfor %}
