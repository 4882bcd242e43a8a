-- Everyone whose windows are measured: referred patients (cohort 'referred') and their
-- matched controls (cohort 'control'), each with the case's index date.

with index_dates as (
    select * from {{ ref('int_index_dates') }} where {{ in_build_scope() }}
),

matched_controls as (
    select * from {{ ref('int_matched_controls') }} where {{ in_build_scope() }}
)

select
    'referred' as cohort,
    practice_id,
    patient_id as case_patient_id,
    patient_id,
    index_date,
    0 as control_number
from index_dates

union all

select
    'control' as cohort,
    practice_id,
    case_patient_id,
    control_patient_id as patient_id,
    cast(index_date as date) as index_date,
    cast(control_number as integer) as control_number
from matched_controls
