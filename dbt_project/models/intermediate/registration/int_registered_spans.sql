-- Registered person-time as non-overlapping spans per practice and patient.
-- A registration counts from start_date to the earliest of end_date, date_of_death and the
-- practice's extract date (all inclusive); overlapping or touching registrations are merged
-- so that no day is counted twice.

with registrations as (
    select * from {{ ref('stg_gp_extract__registrations') }} where {{ in_build_scope() }}
),

patients as (
    select * from {{ ref('stg_gp_extract__patients') }} where {{ in_build_scope() }}
),

practices as (
    select * from {{ ref('int_practice_extracts') }} where {{ in_build_scope() }}
),

clipped as (
    select
        registrations.practice_id,
        registrations.patient_id,
        registrations.start_date,
        least(
            coalesce(registrations.end_date, practices.extracted_at),
            coalesce(patients.date_of_death, practices.extracted_at),
            practices.extracted_at
        ) as end_date
    from registrations
    inner join patients
        on patients.practice_id = registrations.practice_id
        and patients.patient_id = registrations.patient_id
    inner join practices
        on practices.practice_id = registrations.practice_id
),

ordered as (
    select
        *,
        max(end_date) over (
            partition by practice_id, patient_id
            order by start_date, end_date
            rows between unbounded preceding and 1 preceding
        ) as latest_end_before
    from clipped
    where end_date >= start_date
),

islands as (
    select
        *,
        sum(
            case
                when latest_end_before is null then 1
                when start_date > {{ add_days('latest_end_before', 1) }} then 1
                else 0
            end
        ) over (
            partition by practice_id, patient_id
            order by start_date, end_date
            rows between unbounded preceding and current row
        ) as island
    from ordered
)

select
    practice_id,
    patient_id,
    island as span_number,
    min(start_date) as span_start,
    max(end_date) as span_end,
    {{ days_between('min(start_date)', 'max(end_date)') }}
    + 1 as span_days
from islands
group by practice_id, patient_id, island
