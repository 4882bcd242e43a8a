-- Who is referred, in the shape of OpenSAFELY ehrQL measures output: one row per measure,
-- interval and group, with numerator, denominator and ratio, and one column per grouping
-- (empty when the measure is not grouped by it). Measures, each monthly and yearly, overall
-- and by one group at a time:
--   referred_<period>[_by_<group>]: patients with a referral while registered in the interval
--     / patients registered on at least one day of it;
--   declined_share_<period>[_by_<group>]: declined codes / referral and declined codes
--     recorded while registered in the interval.

{%- set groups = ['age_band', 'sex', 'ethnicity', 'imd_quintile', 'region', 'rural_urban',
                  'source_system', 'homeless'] %}
{%- set quantities = {
    'referred': ('referred', '1'),
    'declined_share': ('declined_codes', 'referral_codes + declined_codes')} %}

with patient_intervals as (
    select * from {{ ref('int_measure_patient_intervals') }}
),

by_group as (
    {%- for quantity, (numerator, denominator) in quantities.items() %}
    {%- set outer_loop = loop %}
    {%- for group in [none] + groups %}
    select
        '{{ quantity }}_' || period || '{{ "_by_" ~ group if group else "" }}' as measure,
        interval_start,
        interval_end,
        {%- for column in groups %}
        {%- if column == group %}
        {{ column }},
        {%- elif column == 'homeless' %}
        cast(null as {{ dbt.type_boolean() }}) as {{ column }},
        {%- else %}
        cast(null as {{ dbt.type_string() }}) as {{ column }},
        {%- endif %}
        {%- endfor %}
        sum({{ numerator }}) as numerator,
        sum({{ denominator }}) as denominator
    from patient_intervals
    where {{ denominator }} > 0
    group by period, interval_start, interval_end{{ ', ' ~ group if group else '' }}
    {{ 'union all' if not (outer_loop.last and loop.last) }}
    {%- endfor %}
    {%- endfor %}
)

select
    measure,
    interval_start,
    interval_end,
    1.0 * numerator / nullif(denominator, 0) as ratio,
    cast(numerator as {{ dbt.type_bigint() }}) as numerator,
    cast(denominator as {{ dbt.type_bigint() }}) as denominator,
    {{ groups | join(',\n    ') }}
from by_group
