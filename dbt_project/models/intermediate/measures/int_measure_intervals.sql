-- The intervals of the uptake measures: every calendar month of the study period, and study
-- years of twelve months from the first month (2015-02-01..2016-01-31, ...), the last year
-- ending at study_end. interval_end is the last day of the interval (inclusive), as in ehrQL.

with months as (
    {{ month_spine(study_date('study_start'), study_date('study_end')) }}
),

numbered as (
    select
        month,
        row_number() over (order by month) - 1 as month_number
    from months
)

select
    'monthly' as period,
    month as interval_start,
    {{ add_days(dbt.dateadd('month', 1, 'month'), -1) }} as interval_end
from numbered

union all

select
    'yearly' as period,
    month as interval_start,
    least(
        {{ add_days(dbt.dateadd('month', 12, 'month'), -1) }},
        {{ study_date('study_end') }}
    ) as interval_end
from numbered
where mod(month_number, 12) = 0
