-- Patients with the attributes that outcomes and uptake are broken down by.

with patients as (
    select * from {{ ref('stg_gp_extract__patients') }} where {{ in_build_scope() }}
),

practices as (
    select * from {{ ref('int_practice_extracts') }} where {{ in_build_scope() }}
)

select
    patients.practice_id,
    patients.patient_id,
    patients.year_of_birth,
    patients.sex,
    patients.ethnicity,
    patients.imd_quintile,
    patients.rural_urban,
    patients.date_of_death,
    practices.region,
    practices.source_system
from patients
inner join practices
    on practices.practice_id = patients.practice_id
