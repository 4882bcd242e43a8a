with sp_events as (
    select * from {{ ref('int_sp_events') }} where {{ in_build_scope() }}
)

select
    event_id,
    patient_id,
    practice_id,
    event_date,
    snomed_code,
    category,
    term,
    consultation_id,
    while_registered,
    codelist,
    codelist_version
from sp_events
