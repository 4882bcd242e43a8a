-- Every patient eligible to be a control in a case's trial, before matching on recent use:
-- at the case's practice, registered on every day of [t - window_days, t], not referred on
-- or before t, and of the case's sex, age band (in t's year), IMD quintile (unknown matches
-- unknown) and homeless status before t. Only information up to t is used: a candidate
-- referred after t stays eligible, and is censored at that referral (int_cohort_person_time).

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

homeless as (
    select * from {{ ref('int_homeless_findings') }} where {{ in_build_scope() }}
)

select
    cases.practice_id,
    cases.patient_id as case_patient_id,
    cases.index_date,
    attributes.patient_id as control_patient_id
from cases
inner join attributes
    on attributes.practice_id = cases.practice_id
    and attributes.sex = cases.sex
    and coalesce(attributes.imd_quintile, -1) = cases.imd_key
    and attributes.patient_id <> cases.patient_id
inner join spans
    on spans.practice_id = attributes.practice_id
    and spans.patient_id = attributes.patient_id
    and spans.span_start <= {{ add_days('cases.index_date', -var('window_days')) }}
    and spans.span_end >= cases.index_date
left join first_referrals
    on first_referrals.practice_id = attributes.practice_id
    and first_referrals.patient_id = attributes.patient_id
left join homeless
    on homeless.practice_id = attributes.practice_id
    and homeless.patient_id = attributes.patient_id
where
    {{ age_band('extract(year from cases.index_date) - attributes.year_of_birth') }}
        = cases.age_band
    and (first_referrals.first_referral_date is null
         or first_referrals.first_referral_date > cases.index_date)
    and coalesce(homeless.first_homeless_date < cases.index_date, false) = cases.homeless_before
