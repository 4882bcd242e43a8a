-- Each patient's first referral-category event at the practice, of any date and whether
-- registered that day or not: who had been referred by a given day (the target trial's
-- "not referred on or before t"), and when a control's own referral censors its follow-up.

with sp_events as (
    select * from {{ ref('int_sp_events') }} where {{ in_build_scope() }}
)

select
    practice_id,
    patient_id,
    min(event_date) as first_referral_date
from sp_events
where category = 'referral'
group by practice_id, patient_id
