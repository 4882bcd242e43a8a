-- The population each trial draws its controls from, sampled for covariate balance before
-- matching (sp_covariate_balance): up to `balance_comparators` patients per case, drawn at
-- random (seeded) from the case's practice among those who meet the trial's eligibility as of
-- t (registered on every day of [t - window_days, t], not referred on or before t), whatever
-- their sex, age, IMD or use. Each patient of a practice has a seeded rank; a case probes the
-- ranks from a seeded start, so no case is paired with every patient of its practice.

{%- set per_case = var('balance_comparators') | int %}
{%- set seed = var('matching_seed') %}

with cases as (
    select * from {{ ref('int_trial_cases') }}
    where {{ in_build_scope() }} and ineligible_reason is null
),

attributes as (
    select * from {{ ref('int_patient_attributes') }} where {{ in_build_scope() }}
),

spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

first_referrals as (
    select * from {{ ref('int_first_referrals') }} where {{ in_build_scope() }}
),

ranked as (
    select
        practice_id,
        patient_id,
        row_number() over (
            partition by practice_id
            order by {{ seeded_number("'" ~ seed ~ "|comparator|' || practice_id || '|' || patient_id") }},
                patient_id
        ) - 1 as patient_rank,
        count(*) over (partition by practice_id) as practice_patients
    from attributes
),

practice_sizes as (
    select distinct practice_id, practice_patients from ranked
),

draws as (
    {%- for draw in range(2 * per_case) %}
    select {{ draw }} as draw {{ 'union all' if not loop.last }}
    {%- endfor %}
),

probes as (
    select
        cases.practice_id,
        cases.patient_id as case_patient_id,
        cases.index_date,
        draws.draw,
        ({{ seeded_number("'" ~ seed ~ "|start|' || cases.practice_id || '|' || cases.patient_id") }}
            + draws.draw) % practice_sizes.practice_patients as patient_rank
    from cases
    inner join practice_sizes
        on practice_sizes.practice_id = cases.practice_id
    cross join draws
),

eligible as (
    select
        probes.practice_id,
        probes.case_patient_id,
        probes.index_date,
        probes.draw,
        ranked.patient_id as comparator_patient_id
    from probes
    inner join ranked
        on ranked.practice_id = probes.practice_id
        and ranked.patient_rank = probes.patient_rank
    inner join spans
        on spans.practice_id = ranked.practice_id
        and spans.patient_id = ranked.patient_id
        and spans.span_start <= {{ add_days('probes.index_date', -var('window_days')) }}
        and spans.span_end >= probes.index_date
    left join first_referrals
        on first_referrals.practice_id = ranked.practice_id
        and first_referrals.patient_id = ranked.patient_id
    where
        ranked.patient_id <> probes.case_patient_id
        and (first_referrals.first_referral_date is null
             or first_referrals.first_referral_date > probes.index_date)
),

numbered as (
    select
        *,
        row_number() over (partition by practice_id, case_patient_id order by draw)
            as comparator_number
    from eligible
)

select practice_id, case_patient_id, index_date, comparator_patient_id, comparator_number
from numbered
where comparator_number <= {{ per_case }}
