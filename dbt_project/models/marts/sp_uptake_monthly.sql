-- Uptake of social prescribing by month, overall and by each monthly breakdown (var
-- breakdowns).
-- registered_patients: registered on the 15th of the month; referred_patients and
-- declined_patients: with such an event in the month while registered.
-- The per-practice counts come from int_uptake_practice_months; this sums them.

{%- set groups = breakdowns(monthly=true) %}

with practice_months as (
    select * from {{ ref('int_uptake_practice_months') }}
),

cells as (
    select
        month,
        {{ groups | join(',\n        ') }},
        sum(referred_patients) as referred_patients,
        sum(declined_patients) as declined_patients,
        sum(registered_patients) as registered_patients
    from practice_months
    group by month, {{ groups | join(', ') }}
),

by_group as (
    select month, 'all' as group_type, 'all' as group_value,
        sum(referred_patients) as referred_patients,
        sum(declined_patients) as declined_patients,
        sum(registered_patients) as registered_patients
    from cells
    group by month
    {%- for group in groups %}
    union all
    select month, '{{ group }}' as group_type, {{ group }} as group_value,
        sum(referred_patients) as referred_patients,
        sum(declined_patients) as declined_patients,
        sum(registered_patients) as registered_patients
    from cells
    group by month, {{ group }}
    {%- endfor %}
)

select
    month,
    group_type,
    group_value,
    cast(referred_patients as {{ dbt.type_bigint() }}) as referred_patients,
    cast(declined_patients as {{ dbt.type_bigint() }}) as declined_patients,
    cast(registered_patients as {{ dbt.type_bigint() }}) as registered_patients,
    case when registered_patients > 0
        then round(cast(100000.0 as {{ dbt.type_float() }}) * referred_patients / registered_patients, 2)
    end as rate_per_100k
from by_group
