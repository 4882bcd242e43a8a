-- Recorded health-service use before the trial date t of every person-trial the design
-- looks at: each eligible case at its index date, each candidate control and each sampled
-- comparator at their case's index date. The one definition of "recent use" that matching
-- (int_control_candidates) and balance (sp_covariate_balance) both read:
--   consultations_recent   consultations in [t - recent_use_days, t - 1]
--   consultations_earlier  consultations in [t - window_days, t - recent_use_days - 1]
--   ae_attendances_pre, emergency_admissions_pre   in [t - window_days, t - 1]
-- Every person-trial here is registered on every day of the pre window (their eligibility),
-- so every event in it is on a registered day.

with cases as (
    select * from {{ ref('int_trial_cases') }}
    where {{ in_build_scope() }} and ineligible_reason is null
),

pairs as (
    select * from {{ ref('int_trial_pairs') }} where {{ in_build_scope() }}
),

comparators as (
    select * from {{ ref('int_trial_comparators') }} where {{ in_build_scope() }}
),

events as (
    select * from {{ ref('int_outcome_events') }} where {{ in_build_scope() }}
),

person_trials as (
    select practice_id, patient_id, index_date as trial_date from cases
    union
    select practice_id, control_patient_id, index_date from pairs
    union
    select practice_id, comparator_patient_id, index_date from comparators
),

in_pre_window as (
    select
        person_trials.practice_id,
        person_trials.patient_id,
        person_trials.trial_date,
        events.measure,
        events.event_date >= {{ add_days('person_trials.trial_date', -var('recent_use_days')) }}
            as is_recent
    from person_trials
    inner join events
        on events.practice_id = person_trials.practice_id
        and events.patient_id = person_trials.patient_id
        and events.event_date
            between {{ add_days('person_trials.trial_date', -var('window_days')) }}
            and {{ add_days('person_trials.trial_date', -1) }}
),

counted as (
    select
        practice_id,
        patient_id,
        trial_date,
        sum(case when measure = 'consultations' and is_recent then 1 else 0 end)
            as consultations_recent,
        sum(case when measure = 'consultations' and not is_recent then 1 else 0 end)
            as consultations_earlier,
        sum(case when measure = 'ae_attendances' then 1 else 0 end) as ae_attendances_pre,
        sum(case when measure = 'emergency_admissions' then 1 else 0 end)
            as emergency_admissions_pre
    from in_pre_window
    group by practice_id, patient_id, trial_date
)

select
    person_trials.practice_id,
    person_trials.patient_id,
    person_trials.trial_date,
    {%- for column in ['consultations_recent', 'consultations_earlier', 'ae_attendances_pre',
                       'emergency_admissions_pre'] %}
    cast(coalesce(counted.{{ column }}, 0) as {{ dbt.type_bigint() }})
        as {{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
from person_trials
left join counted
    on counted.practice_id = person_trials.practice_id
    and counted.patient_id = person_trials.patient_id
    and counted.trial_date = person_trials.trial_date
