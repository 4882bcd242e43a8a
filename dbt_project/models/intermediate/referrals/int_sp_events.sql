-- Clinical events whose code is in the active SP codelist, with its category and whether
-- the patient was registered at the practice on the event date.

with clinical_events as (
    select * from {{ ref('stg_gp_extract__clinical_events') }} where {{ in_build_scope() }}
),

sp_codes as (
    select * from {{ ref('stg_codelists__sp_codes') }}
),

spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

coded as (
    select
        clinical_events.event_id,
        clinical_events.practice_id,
        clinical_events.patient_id,
        clinical_events.consultation_id,
        clinical_events.event_date,
        clinical_events.snomed_code,
        sp_codes.category,
        sp_codes.term,
        sp_codes.codelist,
        sp_codes.codelist_version
    from clinical_events
    inner join sp_codes
        on sp_codes.snomed_code = clinical_events.snomed_code
)

select
    coded.*,
    spans.practice_id is not null as while_registered
from coded
left join spans
    on spans.practice_id = coded.practice_id
    and spans.patient_id = coded.patient_id
    and coded.event_date between spans.span_start and spans.span_end
