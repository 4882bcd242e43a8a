-- sqlfluff:ignore:parsing
-- (sqlfluff 4.4's DuckDB dialect cannot parse GROUPING SETS; the rest of the file is linted.)
-- Who is referred, in the shape of OpenSAFELY ehrQL measures output: one row per measure,
-- interval and group, with numerator, denominator and ratio, and one column per grouping
-- (empty when the measure is not grouped by it): the declared breakdowns (var breakdowns).
-- Measures, each monthly and yearly, overall and by one group at a time:
--   referred_<period>[_by_<group>]: patients with a referral while registered in the interval
--     / patients registered on at least one day of it;
--   declined_share_<period>[_by_<group>]: declined codes / referral and declined codes
--     recorded while registered in the interval.

{%- set groups = breakdowns() %}

with practice_cells as (
    select * from {{ ref('int_measure_practice_cells') }}
),

-- One pass over the practice cells: every measure's cells at once (grouping sets), rather
-- than a scan per measure and group.
cells as (
    select
        period,
        interval_start,
        interval_end,
        {{ groups | join(',\n        ') }},
        case
            {%- for group in groups %}
            when grouping({{ group }}) = 0 then '_by_{{ group }}'
            {%- endfor %}
            else ''
        end as grouped_by,
        sum(referred) as referred,
        sum(registered) as registered,
        sum(declined_codes) as declined_codes,
        sum(referral_codes + declined_codes) as sp_codes
    from practice_cells
    group by grouping sets (
        (period, interval_start, interval_end),
        {%- for group in groups %}
        (period, interval_start, interval_end, {{ group }}){{ ',' if not loop.last }}
        {%- endfor %}
    )
),

by_group as (
    select
        'referred_' || period || grouped_by as measure,
        interval_start,
        interval_end,
        {{ groups | join(',\n        ') }},
        referred as numerator,
        registered as denominator
    from cells

    union all

    select
        'declined_share_' || period || grouped_by as measure,
        interval_start,
        interval_end,
        {{ groups | join(',\n        ') }},
        declined_codes as numerator,
        sp_codes as denominator
    from cells
    where sp_codes > 0
)

select
    measure,
    interval_start,
    interval_end,
    cast(1.0 as {{ dbt.type_float() }}) * numerator / nullif(denominator, 0) as ratio,
    cast(numerator as {{ dbt.type_bigint() }}) as numerator,
    cast(denominator as {{ dbt.type_bigint() }}) as denominator,
    {{ groups | join(',\n    ') }}
from by_group
