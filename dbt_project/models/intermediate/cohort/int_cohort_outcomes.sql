-- One row per cohort member: characteristics at index, registered days and event counts in
-- each window. Shared by the referred patients' and the controls' marts, so both are
-- measured by the same code.

{%- set measures = outcome_measures() %}
{%- set modes = var('consultation_modes') %}

with person_time as (
    select * from {{ ref('int_cohort_person_time') }} where {{ in_build_scope() }}
),

window_events as (
    select * from {{ ref('int_cohort_window_events') }} where {{ in_build_scope() }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }} where {{ in_build_scope() }}
),

counts as (
    select
        cohort,
        practice_id,
        case_patient_id,
        patient_id,
        {%- for window_name in ['pre', 'post'] %}
        {%- for measure in measures %}
        sum(case when window_name = '{{ window_name }}' and measure = '{{ measure }}'
            then events else 0 end) as {{ window_name }}_{{ measure }},
        {%- endfor %}
        {%- for measure in measures_by_mode() %}
        {%- for mode in modes %}
        sum(case when window_name = '{{ window_name }}' and measure = '{{ measure }}'
            and mode = '{{ mode }}' then events else 0 end)
            as {{ window_name }}_{{ measure }}_{{ mode }},
        {%- endfor %}
        {%- endfor %}
        {%- endfor %}
        count(*) as event_groups
    from window_events
    group by cohort, practice_id, case_patient_id, patient_id
)

select
    person_time.cohort,
    person_time.practice_id,
    person_time.case_patient_id,
    person_time.patient_id,
    person_time.control_number,
    person_time.index_date,
    cast(extract(year from person_time.index_date) - attributes.year_of_birth
        as {{ dbt.type_bigint() }}) as age_at_index,
    {{ age_band('extract(year from person_time.index_date) - attributes.year_of_birth') }}
        as age_band,
    attributes.sex,
    attributes.ethnicity,
    attributes.imd_quintile,
    attributes.rural_urban,
    attributes.region,
    attributes.source_system,
    cast(person_time.pre_days as {{ dbt.type_bigint() }}) as pre_days,
    cast(person_time.post_days as {{ dbt.type_bigint() }}) as post_days,
    person_time.follow_up_end,
    person_time.complete_follow_up,
    person_time.censored_at_referral,
    {%- for window_name in ['pre', 'post'] %}
    {%- set window_loop = loop %}
    {%- for column in window_count_columns(window_name) %}
    cast(coalesce(counts.{{ column }}, 0) as {{ dbt.type_bigint() }})
        as {{ column }}{{ ',' if not (loop.last and window_loop.last) }}
    {%- endfor %}
    {%- endfor %}
from person_time
inner join attributes
    on attributes.practice_id = person_time.practice_id
    and attributes.patient_id = person_time.patient_id
left join counts
    on counts.cohort = person_time.cohort
    and counts.practice_id = person_time.practice_id
    and counts.case_patient_id = person_time.case_patient_id
    and counts.patient_id = person_time.patient_id
