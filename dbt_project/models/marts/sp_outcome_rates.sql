-- Rates per 1,000 person-years with 95% confidence intervals, for referred patients and
-- their controls, each measure and window, overall and for the homeless subgroup.
-- A rate is a ratio estimator (events / person-days); its interval comes from the robust
-- (sandwich) variance of a Poisson model clustered on matched sets, as in
-- docs/methods.md: var(log rate) = sum over sets of (E_s - rate * T_s)^2 / (sum E)^2.

with set_windows as (
    select * from {{ ref('int_matched_set_windows') }}
),

long as (
    {%- for window_name in ['pre', 'post'] %}
    select
        subgroup,
        practice_id,
        case_patient_id,
        cohort,
        measure,
        '{{ window_name }}' as window_name,
        patients,
        {{ window_name }}_events as events,
        {{ window_name }}_person_days as person_days
    from set_windows
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

totals as (
    select
        subgroup,
        cohort,
        measure,
        window_name,
        sum(patients) as patients,
        count(*) as matched_sets,
        sum(events) as events,
        sum(person_days) as person_days,
        cast(1.0 as {{ dbt.type_float() }}) * sum(events) / nullif(sum(person_days), 0) as rate_per_day
    from long
    group by subgroup, cohort, measure, window_name
),

variances as (
    select
        long.subgroup,
        long.cohort,
        long.measure,
        long.window_name,
        sum((long.events - totals.rate_per_day * long.person_days)
            * (long.events - totals.rate_per_day * long.person_days))
            / nullif(cast(1.0 as {{ dbt.type_float() }}) * totals.events * totals.events, 0)
            as log_rate_variance
    from long
    inner join totals
        on totals.subgroup = long.subgroup
        and totals.cohort = long.cohort
        and totals.measure = long.measure
        and totals.window_name = long.window_name
    group by long.subgroup, long.cohort, long.measure, long.window_name, totals.events
),

estimated as (
    select
        totals.*,
        365250.0 * totals.rate_per_day as rate_per_1000_py,
        case when totals.matched_sets >= 2 and totals.events > 0
            then sqrt(variances.log_rate_variance)
        end as log_se
    from totals
    inner join variances
        on variances.subgroup = totals.subgroup
        and variances.cohort = totals.cohort
        and variances.measure = totals.measure
        and variances.window_name = totals.window_name
)

select
    subgroup,
    cohort,
    measure,
    window_name as {{ adapter.quote('window') }},
    cast(patients as {{ dbt.type_bigint() }}) as patients,
    cast(matched_sets as {{ dbt.type_bigint() }}) as matched_sets,
    cast(events as {{ dbt.type_bigint() }}) as events,
    cast(person_days as {{ dbt.type_bigint() }}) as person_days,
    round(person_days / cast(365.25 as {{ dbt.type_float() }}), 4) as person_years,
    round(rate_per_1000_py, 2) as rate_per_1000_py,
    round(log_se, 6) as log_se,
    round({{ ci_bound('rate_per_1000_py', 'log_se', 'lower') }}, 2) as ci_lower,
    round({{ ci_bound('rate_per_1000_py', 'log_se', 'upper') }}, 2) as ci_upper
from estimated
