-- Events, registered person-years and rates per 1,000 person-years for each cohort,
-- measure and window. Person-years are registered days / 365.25.

{%- set measures = outcome_measures() %}

with cohort_outcomes as (
    select * from {{ ref('int_cohort_outcomes') }}
),

long as (
    {%- for window_name in ['pre', 'post'] %}
    {%- for measure in measures %}
    select
        cohort,
        '{{ measure }}' as measure,
        '{{ window_name }}' as window_name,
        {{ window_name }}_{{ measure }} as events,
        {{ window_name }}_days as person_days
    from cohort_outcomes
    {{ 'union all' if not (loop.last and window_name == 'post') }}
    {%- endfor %}
    {%- endfor %}
),

summed as (
    select
        cohort,
        measure,
        window_name,
        count(*) as patients,
        cast(sum(events) as {{ dbt.type_bigint() }}) as events,
        cast(sum(person_days) as {{ dbt.type_bigint() }}) as person_days
    from long
    group by cohort, measure, window_name
)

select
    cohort,
    measure,
    window_name as {{ adapter.quote('window') }},
    patients,
    events,
    person_days,
    round(person_days / cast(365.25 as {{ dbt.type_float() }}), 4) as person_years,
    case when person_days > 0
        then round(cast(1000.0 as {{ dbt.type_float() }}) * events
            / (person_days / cast(365.25 as {{ dbt.type_float() }})), 2)
    end as rate_per_1000_py
from summed
