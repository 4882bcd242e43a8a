-- The first homeless finding (codelist category `homeless`, SNOMED CT 32911000) of each
-- patient at a practice, registered that day or not: it describes the person, not the visit.
-- The RSC protocol reports patients found homeless before their index date separately.

with sp_events as (
    select * from {{ ref('int_sp_events') }}
)

select
    practice_id,
    patient_id,
    min(event_date) as first_homeless_date
from sp_events
where category = 'homeless'
group by practice_id, patient_id
