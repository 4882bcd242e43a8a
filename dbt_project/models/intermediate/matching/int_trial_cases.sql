-- The cases of the emulated target trials (docs/methods.md, decision 5): one trial per
-- referred patient at their index date t, with what the trial matches on as of t and whether
-- the case meets the trial's eligibility criteria, which its controls must meet too:
-- registered at the practice on every day of [t - window_days, t], and not referred before t.
-- Ineligible cases keep their outcomes in sp_patient_outcomes but get no controls.

with index_dates as (
    select * from {{ ref('int_index_dates') }} where {{ in_build_scope() }}
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
),

registered_through_pre_window as (
    select index_dates.practice_id, index_dates.patient_id
    from index_dates
    inner join spans
        on spans.practice_id = index_dates.practice_id
        and spans.patient_id = index_dates.patient_id
        and spans.span_start <= {{ add_days('index_dates.index_date', -var('window_days')) }}
        and spans.span_end >= index_dates.index_date
)

select
    index_dates.practice_id,
    index_dates.patient_id,
    index_dates.index_date,
    attributes.sex,
    coalesce(attributes.imd_quintile, -1) as imd_key,
    {{ age_band('extract(year from index_dates.index_date) - attributes.year_of_birth') }}
        as age_band,
    coalesce(homeless.first_homeless_date < index_dates.index_date, false) as homeless_before,
    case
        when registered.patient_id is null then 'not_registered_through_pre_window'
        when first_referrals.first_referral_date < index_dates.index_date
            then 'referred_before_index'
    end as ineligible_reason,
    {{ seeded_number(
        "'" ~ var('matching_seed') ~ "|' || index_dates.practice_id || '|' || index_dates.patient_id"
    ) }}
        as case_order
from index_dates
inner join attributes
    on attributes.practice_id = index_dates.practice_id
    and attributes.patient_id = index_dates.patient_id
left join registered_through_pre_window as registered
    on registered.practice_id = index_dates.practice_id
    and registered.patient_id = index_dates.patient_id
left join first_referrals
    on first_referrals.practice_id = index_dates.practice_id
    and first_referrals.patient_id = index_dates.patient_id
left join homeless
    on homeless.practice_id = index_dates.practice_id
    and homeless.patient_id = index_dates.patient_id
