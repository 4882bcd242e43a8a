-- Everyone whose windows are measured: referred patients (cohort 'referred') and their
-- matched controls (cohort 'control'), each with the case's index date. A control's own
-- later referral (own_referral_date) ends its follow-up: from then on it is treated, and no
-- longer shows what its case's use would have been without referral.

with index_dates as (
    select * from {{ ref('int_index_dates') }} where {{ in_build_scope() }}
),

matched_controls as (
    select * from {{ ref('int_matched_controls') }} where {{ in_build_scope() }}
),

first_referrals as (
    select * from {{ ref('int_first_referrals') }} where {{ in_build_scope() }}
)

select
    'referred' as cohort,
    practice_id,
    patient_id as case_patient_id,
    patient_id,
    index_date,
    0 as control_number,
    cast(null as date) as own_referral_date
from index_dates

union all

select
    'control' as cohort,
    matched_controls.practice_id,
    matched_controls.case_patient_id,
    matched_controls.control_patient_id as patient_id,
    cast(matched_controls.index_date as date) as index_date,
    cast(matched_controls.control_number as integer) as control_number,
    first_referrals.first_referral_date as own_referral_date
from matched_controls
left join first_referrals
    on first_referrals.practice_id = matched_controls.practice_id
    and first_referrals.patient_id = matched_controls.control_patient_id
