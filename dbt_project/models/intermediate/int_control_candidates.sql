-- Every eligible (case, control) pair, with a seeded order for drawing controls.
-- Eligible: another patient of the case's practice with the same sex, age band (at the
-- case's index year) and IMD quintile (unknown matches unknown), registered on every day of
-- [index - window_days, index], and with no referral before index + window_days.

with index_dates as (
    select * from {{ ref('int_index_dates') }} where {{ in_build_scope() }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }} where {{ in_build_scope() }}
),

spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

sp_events as (
    select * from {{ ref('int_sp_events') }} where {{ in_build_scope() }}
),

cases as (
    select
        index_dates.practice_id,
        index_dates.patient_id,
        index_dates.index_date,
        attributes.sex,
        coalesce(attributes.imd_quintile, -1) as imd_key,
        {{ age_band('extract(year from index_dates.index_date) - attributes.year_of_birth') }}
            as age_band,
        {{ dbt.hash("'" ~ var('matching_seed') ~ "|' || index_dates.practice_id || '|' || index_dates.patient_id") }}
            as case_order
    from index_dates
    inner join attributes
        on attributes.practice_id = index_dates.practice_id
        and attributes.patient_id = index_dates.patient_id
),

first_referrals as (
    select practice_id, patient_id, min(event_date) as first_referral_date
    from sp_events
    where category = 'referral'
    group by practice_id, patient_id
),

pairs as (
    select
        cases.practice_id,
        cases.patient_id as case_patient_id,
        cases.index_date,
        cases.case_order,
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
    where
        {{ age_band('extract(year from cases.index_date) - attributes.year_of_birth') }}
            = cases.age_band
        and (
            first_referrals.first_referral_date is null
            or first_referrals.first_referral_date
                >= {{ add_days('cases.index_date', var('window_days')) }}
        )
)

select
    practice_id,
    case_patient_id,
    index_date,
    control_patient_id,
    case_order,
    {{ dbt.hash("'" ~ var('matching_seed') ~ "|' || practice_id || '|' || case_patient_id || '|' || control_patient_id") }}
        as control_order
from pairs
