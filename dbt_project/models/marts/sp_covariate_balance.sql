-- Covariate balance of the matched design, as OHDSI CohortMethod reports it: for each
-- covariate (a mean, or the share at each level of a category), its value in every eligible
-- case and in a sample of the population the trials draw from (before matching), in the
-- matched cases and their controls (after matching; controls weighted 1/k per set), and in
-- the cases that found no control; and the standardised mean differences
--   SMD = (x_1 - x_0) / sqrt((s_1^2 + s_0^2) / 2)
-- (for a share p, s^2 = p (1 - p)). |SMD| above 0.1 after matching is a warning of the
-- quality gate; unmatched against matched cases shows how the unmatched differ.

{%- set means = ['age_at_index', 'consultations_recent', 'consultations_pre',
                 'ae_attendances_pre', 'emergency_admissions_pre'] %}
{%- set categories = ['sex', 'imd_quintile', 'ethnicity', 'region', 'homeless_before'] %}
{%- set groups = ['cases', 'comparators', 'matched_cases', 'controls', 'unmatched_cases'] %}

with person_trials as (
    select * from {{ ref('int_balance_person_trials') }}
),

subgroups as (
    select 'all' as subgroup, * from person_trials
    union all
    select 'homeless' as subgroup, * from person_trials where case_homeless_before
),

grouped as (
    select 'cases' as balance_group, subgroups.* from subgroups where subgroups.role = 'case'
    union all
    select 'comparators' as balance_group, subgroups.* from subgroups
    where subgroups.role = 'comparator'
    union all
    select 'matched_cases' as balance_group, subgroups.* from subgroups
    where subgroups.role = 'case' and subgroups.matched
    union all
    select 'controls' as balance_group, subgroups.* from subgroups
    where subgroups.role = 'control'
    union all
    select 'unmatched_cases' as balance_group, subgroups.* from subgroups
    where subgroups.role = 'case' and not subgroups.matched
),

values_long as (
    {%- for covariate in means %}
    select
        subgroup, balance_group, weight, '{{ covariate }}' as covariate,
        cast(null as {{ dbt.type_string() }}) as level, 'mean' as statistic,
        cast({{ covariate }} as {{ dbt.type_float() }}) as value
    from grouped
    union all
    {%- endfor %}
    {%- for covariate in categories %}
    select
        subgroup, balance_group, weight, '{{ covariate }}' as covariate,
        cast({{ covariate }} as {{ dbt.type_string() }}) as level, 'share' as statistic,
        cast(1.0 as {{ dbt.type_float() }}) as value
    from grouped
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

group_sizes as (
    select subgroup, balance_group, count(*) as people, sum(weight) as weight
    from grouped
    group by subgroup, balance_group
),

covariate_levels as (
    select distinct subgroup, covariate, level, statistic from values_long
),

sums as (
    select
        subgroup, balance_group, covariate, level, statistic,
        count(*) as people,
        sum(weight * value) as weighted_sum,
        sum(weight * value * value) as weighted_square_sum
    from values_long
    group by subgroup, balance_group, covariate, level, statistic
),

per_group as (
    select
        covariate_levels.subgroup,
        covariate_levels.covariate,
        covariate_levels.level,
        covariate_levels.statistic,
        group_sizes.balance_group,
        group_sizes.people as group_people,
        coalesce(sums.people, 0) as level_people,
        coalesce(sums.weighted_sum, 0) / group_sizes.weight as group_value,
        coalesce(sums.weighted_square_sum, 0) / group_sizes.weight as group_square
    from covariate_levels
    inner join group_sizes
        on group_sizes.subgroup = covariate_levels.subgroup
    left join sums
        on sums.subgroup = covariate_levels.subgroup
        and sums.balance_group = group_sizes.balance_group
        and sums.covariate = covariate_levels.covariate
        and coalesce(sums.level, '') = coalesce(covariate_levels.level, '')
),

with_variance as (
    select
        *,
        case
            when statistic = 'share' then group_value * (1 - group_value)
            else greatest(group_square - group_value * group_value, 0)
        end as group_variance
    from per_group
),

wide as (
    select
        subgroup,
        covariate,
        level,
        statistic,
        {%- for group in groups %}
        coalesce(max(case when balance_group = '{{ group }}' then group_people end), 0)
            as {{ group }},
        max(case when balance_group = '{{ group }}' then level_people end)
            as {{ group }}_with_level,
        max(case when balance_group = '{{ group }}' then group_value end) as {{ group }}_value,
        max(case when balance_group = '{{ group }}' then group_variance end)
            as {{ group }}_variance{{ ',' if not loop.last }}
        {%- endfor %}
    from with_variance
    group by subgroup, covariate, level, statistic
)

select
    wide.subgroup,
    wide.covariate,
    wide.level,
    wide.statistic,
    {%- for group in groups %}
    cast(wide.{{ group }} as {{ dbt.type_bigint() }}) as {{ group }},
    cast(case when wide.statistic = 'share' then coalesce(wide.{{ group }}_with_level, 0) end
         as {{ dbt.type_bigint() }}) as {{ group }}_with_level,
    {{ round_stable("wide." ~ group ~ "_value", 4) }} as {{ group }}_value,
    round(case when wide.statistic = 'mean' then sqrt(wide.{{ group }}_variance) end, 4)
        as {{ group }}_sd,
    {%- endfor %}
    round({{ standardised_difference('wide', 'cases', 'comparators') }}, 4) as smd_before,
    round({{ standardised_difference('wide', 'matched_cases', 'controls') }}, 4) as smd_after,
    round({{ standardised_difference('wide', 'unmatched_cases', 'matched_cases') }}, 4) as smd_unmatched
from wide
