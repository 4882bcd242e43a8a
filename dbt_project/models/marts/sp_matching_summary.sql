-- How many controls each referred patient found: one row per number of controls, from 0 to
-- controls_per_case, with the number and share of cases (rows with no cases included).

with index_dates as (
    select * from {{ ref('int_index_dates') }}
),

matched_controls as (
    select * from {{ ref('int_matched_controls') }}
),

controls_per_case as (
    select
        index_dates.practice_id,
        index_dates.patient_id,
        count(matched_controls.control_patient_id) as controls_matched
    from index_dates
    left join matched_controls
        on matched_controls.practice_id = index_dates.practice_id
        and matched_controls.case_patient_id = index_dates.patient_id
    group by index_dates.practice_id, index_dates.patient_id
),

possible_counts as (
    {%- for n in range(var('controls_per_case') | int + 1) %}
    select {{ n }} as controls_matched
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

cases as (
    select
        possible_counts.controls_matched,
        count(controls_per_case.patient_id) as cases
    from possible_counts
    left join controls_per_case
        on controls_per_case.controls_matched = possible_counts.controls_matched
    group by possible_counts.controls_matched
)

select
    cast(controls_matched as integer) as controls_matched,
    cast(cases as {{ dbt.type_bigint() }}) as cases,
    cast(sum(cases) over () as {{ dbt.type_bigint() }}) as referred_patients,
    round(cast(1.0 as {{ dbt.type_float() }}) * cases / nullif(sum(cases) over (), 0), 4) as share_of_cases
from cases
