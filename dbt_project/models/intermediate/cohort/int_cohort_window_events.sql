-- Events of each cohort member in their pre and post windows, counted on registered days
-- only; the index day belongs to neither window.

with person_time as (
    select * from {{ ref('int_cohort_person_time') }} where {{ in_build_scope() }}
),

events as (
    select * from {{ ref('int_outcome_events') }} where {{ in_build_scope() }}
),

spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

in_windows as (
    select
        person_time.cohort,
        person_time.practice_id,
        person_time.case_patient_id,
        person_time.patient_id,
        events.measure,
        events.mode,
        events.record_id,
        case when events.event_date < person_time.index_date then 'pre' else 'post' end
            as window_name
    from person_time
    inner join events
        on events.practice_id = person_time.practice_id
        and events.patient_id = person_time.patient_id
        and events.event_date between person_time.pre_start and person_time.follow_up_end
        and events.event_date <> person_time.index_date
    inner join spans
        on spans.practice_id = events.practice_id
        and spans.patient_id = events.patient_id
        and events.event_date between spans.span_start and spans.span_end
)

select
    cohort,
    practice_id,
    case_patient_id,
    patient_id,
    window_name,
    measure,
    mode,
    count(distinct record_id) as events
from in_windows
group by cohort, practice_id, case_patient_id, patient_id, window_name, measure, mode
