-- A referred patient's index date: the first referral event while registered, on or after
-- study_start and on or before study_end.

with sp_events as (
    select * from {{ ref('int_sp_events') }} where {{ in_build_scope() }}
)

select
    practice_id,
    patient_id,
    min(event_date) as index_date
from sp_events
where
    category = 'referral'
    and while_registered
    and event_date between {{ study_date('study_start') }} and {{ study_date('study_end') }}
group by practice_id, patient_id
