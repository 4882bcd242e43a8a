-- Change in health-service use after referral: for each subgroup and measure, the post/pre
-- rate ratio of referred patients, that of their matched controls, and the ratio of the two
-- (a difference-in-differences on the rate-ratio scale), with 95% confidence intervals.
--
-- The model (docs/methods.md): a Poisson model of events with log person-time offset and a
-- term per cohort and window, fitted by GEE with independence working correlation and a
-- robust (sandwich) variance clustered on matched sets. Its estimates are the ratio
-- estimators below, and its variance is the sum over sets of squared influences: a set's
-- influence on log(post/pre) of a cohort is
--   (E_post_s - R_post * T_post_s) / sum(E_post) - (E_pre_s - R_pre * T_pre_s) / sum(E_pre),
-- so pre and post counts of the same people are paired, overdispersion is allowed for, and a
-- case and its own controls are paired in the ratio of ratios: var = sum (u_s - v_s)^2.

with set_windows as (
    select * from {{ ref('int_matched_set_windows') }}
),

totals as (
    select
        subgroup,
        measure,
        cohort,
        sum(patients) as patients,
        count(*) as matched_sets,
        sum(pre_events) as pre_events,
        sum(pre_person_days) as pre_person_days,
        sum(post_events) as post_events,
        sum(post_person_days) as post_person_days,
        1.0 * sum(pre_events) / nullif(sum(pre_person_days), 0) as pre_rate,
        1.0 * sum(post_events) / nullif(sum(post_person_days), 0) as post_rate
    from set_windows
    group by subgroup, measure, cohort
),

influences as (
    select
        set_windows.subgroup,
        set_windows.measure,
        set_windows.practice_id,
        set_windows.case_patient_id,
        set_windows.cohort,
        (set_windows.post_events - totals.post_rate * set_windows.post_person_days)
            / nullif(totals.post_events, 0)
        - (set_windows.pre_events - totals.pre_rate * set_windows.pre_person_days)
            / nullif(totals.pre_events, 0) as influence
    from set_windows
    inner join totals
        on totals.subgroup = set_windows.subgroup
        and totals.measure = set_windows.measure
        and totals.cohort = set_windows.cohort
),

set_influences as (
    select
        subgroup,
        measure,
        practice_id,
        case_patient_id,
        sum(case when cohort = 'referred' then influence end) as referred_influence,
        coalesce(sum(case when cohort = 'control' then influence end), 0) as control_influence
    from influences
    group by subgroup, measure, practice_id, case_patient_id
),

variances as (
    select
        subgroup,
        measure,
        sum(referred_influence * referred_influence) as referred_variance,
        sum(control_influence * control_influence) as control_variance,
        sum((referred_influence - control_influence) * (referred_influence - control_influence))
            as difference_variance
    from set_influences
    group by subgroup, measure
),

comparisons as (
    select
        referred.subgroup,
        referred.measure,
        referred.patients as referred_patients,
        coalesce(control.patients, 0) as control_patients,
        coalesce(control.matched_sets, 0) as cases_with_controls,
        referred.pre_events as referred_pre_events,
        referred.pre_person_days as referred_pre_person_days,
        referred.post_events as referred_post_events,
        referred.post_person_days as referred_post_person_days,
        control.pre_events as control_pre_events,
        control.pre_person_days as control_pre_person_days,
        control.post_events as control_post_events,
        control.post_person_days as control_post_person_days,
        referred.post_rate / nullif(referred.pre_rate, 0) as referred_ratio,
        control.post_rate / nullif(control.pre_rate, 0) as control_ratio,
        -- a sandwich variance needs at least two clusters
        case when referred.matched_sets >= 2 then sqrt(variances.referred_variance) end
            as referred_log_se,
        case when control.matched_sets >= 2 then sqrt(variances.control_variance) end
            as control_log_se,
        case when referred.matched_sets >= 2 and control.matched_sets >= 2
            then sqrt(variances.difference_variance) end as difference_log_se
    from totals as referred
    left join totals as control
        on control.subgroup = referred.subgroup
        and control.measure = referred.measure
        and control.cohort = 'control'
    inner join variances
        on variances.subgroup = referred.subgroup
        and variances.measure = referred.measure
    where referred.cohort = 'referred'
),

estimates as (
    select *, 'referred_post_vs_pre' as estimate, referred_ratio as ratio,
        referred_log_se as log_se
    from comparisons
    union all
    select *, 'control_post_vs_pre' as estimate, control_ratio as ratio,
        control_log_se as log_se
    from comparisons
    union all
    select *, 'ratio_of_ratios' as estimate, referred_ratio / nullif(control_ratio, 0) as ratio,
        difference_log_se as log_se
    from comparisons
),

bounded as (
    select
        *,
        case when ratio > 0 then log_se end as interval_log_se
    from estimates
)

select
    subgroup,
    measure,
    estimate,
    cast(referred_patients as {{ dbt.type_bigint() }}) as referred_patients,
    cast(control_patients as {{ dbt.type_bigint() }}) as control_patients,
    cast(cases_with_controls as {{ dbt.type_bigint() }}) as cases_with_controls,
    {%- for cohort in ['referred', 'control'] %}
    {%- for window_name in ['pre', 'post'] %}
    cast({{ cohort }}_{{ window_name }}_events as {{ dbt.type_bigint() }})
        as {{ cohort }}_{{ window_name }}_events,
    round({{ cohort }}_{{ window_name }}_person_days / 365.25, 4)
        as {{ cohort }}_{{ window_name }}_person_years,
    {%- endfor %}
    {%- endfor %}
    round(ratio, 4) as ratio,
    round(interval_log_se, 6) as log_se,
    round({{ ci_bound('ratio', 'interval_log_se', 'lower') }}, 4) as ci_lower,
    round({{ ci_bound('ratio', 'interval_log_se', 'upper') }}, 4) as ci_upper
from bounded
