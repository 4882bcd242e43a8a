-- Health-service use as one event stream: consultations (all modes), A&E attendances and
-- emergency admissions, keyed by their record ids.

with consultations as (
    select * from {{ ref('stg_gp_extract__consultations') }}
),

hospital_attendances as (
    select * from {{ ref('stg_gp_extract__hospital_attendances') }}
)

select
    practice_id,
    patient_id,
    consultation_date as event_date,
    'consultations' as measure,
    consultation_id as record_id,
    mode
from consultations

union all

select
    practice_id,
    patient_id,
    attendance_date as event_date,
    case setting when 'ae' then 'ae_attendances' else 'emergency_admissions' end as measure,
    attendance_id as record_id,
    cast(null as {{ dbt.type_string() }}) as mode
from hospital_attendances
where setting in ('ae', 'emergency_admission')
