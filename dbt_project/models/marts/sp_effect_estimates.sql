-- The effect of referral on health-service use, per subgroup and measure, with 95%
-- confidence intervals (docs/methods.md, decisions 5 and 10).
--
-- `effect` (kind 'causal'): the design's estimate of the rate after referral over the rate
-- the same patients would have had without it. Controls are matched on recent use as of the
-- index date, so the post-window rates of cases and their own controls are compared, set by
-- set: the Mantel-Haenszel rate ratio stratified by matched set,
--   RR = sum_s a_s / sum_s b_s,  a_s = E1_s T0_s / (T1_s + T0_s),  b_s = E0_s T1_s / (T1_s + T0_s)
-- (E, T: post-window events and person-days of the case (1) and its controls (0)), with the
-- robust variance of its estimating equation sum_s (a_s - RR b_s) = 0, clustered on sets:
--   var(log RR) = sum_s (a_s - RR b_s)^2 / (sum_s a_s)^2.
-- Only sets with at least one control count; the pre windows are not differenced (that
-- would bring regression to the mean back: Daw & Hatfield 2018).
--
-- Descriptive rows (kind 'descriptive'): the post/pre rate ratio of referred patients, that
-- of their controls, and their ratio, from a Poisson GEE with a term per cohort and window
-- and a sandwich variance clustered on matched sets. A set's influence on log(post/pre) of a
-- cohort is (E_post_s - R_post T_post_s) / sum(E_post) - (E_pre_s - R_pre T_pre_s) / sum(E_pre),
-- and the ratio of ratios pairs a case with its own controls: var = sum (u_s - v_s)^2. They
-- describe change over time; they are not effects (a before/after fall is mostly regression
-- to the mean).

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
        cast(1.0 as {{ dbt.type_float() }}) * sum(pre_events) / nullif(sum(pre_person_days), 0) as pre_rate,
        cast(1.0 as {{ dbt.type_float() }}) * sum(post_events) / nullif(sum(post_person_days), 0) as post_rate
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

-- The causal estimate: matched sets with at least one control, post windows only.
matched_sets as (
    select
        subgroup,
        measure,
        practice_id,
        case_patient_id,
        sum(case when cohort = 'control' then patients else 0 end) as controls,
        sum(case when cohort = 'referred' then pre_events else 0 end) as case_pre_events,
        sum(case when cohort = 'referred' then pre_person_days else 0 end) as case_pre_days,
        sum(case when cohort = 'referred' then post_events else 0 end) as case_post_events,
        sum(case when cohort = 'referred' then post_person_days else 0 end) as case_post_days,
        sum(case when cohort = 'control' then pre_events else 0 end) as control_pre_events,
        sum(case when cohort = 'control' then pre_person_days else 0 end) as control_pre_days,
        sum(case when cohort = 'control' then post_events else 0 end) as control_post_events,
        sum(case when cohort = 'control' then post_person_days else 0 end) as control_post_days
    from set_windows
    group by subgroup, measure, practice_id, case_patient_id
    having sum(case when cohort = 'control' then patients else 0 end) > 0
),

mantel_haenszel_terms as (
    select
        *,
        case when case_post_days + control_post_days > 0 then
            cast(case_post_events as {{ dbt.type_float() }}) * control_post_days
            / (case_post_days + control_post_days)
        else 0 end as mh_a,
        case when case_post_days + control_post_days > 0 then
            cast(control_post_events as {{ dbt.type_float() }}) * case_post_days
            / (case_post_days + control_post_days)
        else 0 end as mh_b
    from matched_sets
),

mantel_haenszel as (
    select
        subgroup,
        measure,
        count(*) as matched_sets,
        sum(controls) as controls,
        sum(case_pre_events) as case_pre_events,
        sum(case_pre_days) as case_pre_days,
        sum(case_post_events) as case_post_events,
        sum(case_post_days) as case_post_days,
        sum(control_pre_events) as control_pre_events,
        sum(control_pre_days) as control_pre_days,
        sum(control_post_events) as control_post_events,
        sum(control_post_days) as control_post_days,
        sum(mh_a) as sum_a,
        sum(mh_b) as sum_b
    from mantel_haenszel_terms
    group by subgroup, measure
),

mantel_haenszel_variance as (
    select
        terms.subgroup,
        terms.measure,
        sum((terms.mh_a - totals.sum_a / totals.sum_b * terms.mh_b)
            * (terms.mh_a - totals.sum_a / totals.sum_b * terms.mh_b)) as variance_numerator
    from mantel_haenszel_terms as terms
    inner join mantel_haenszel as totals
        on totals.subgroup = terms.subgroup
        and totals.measure = terms.measure
    where totals.sum_a > 0 and totals.sum_b > 0
    group by terms.subgroup, terms.measure
),

effects as (
    select
        comparisons.subgroup,
        comparisons.measure,
        'effect' as estimate,
        'causal' as kind,
        coalesce(mh.matched_sets, 0) as referred_patients,
        coalesce(mh.controls, 0) as control_patients,
        coalesce(mh.matched_sets, 0) as cases_with_controls,
        mh.case_pre_events as referred_pre_events,
        mh.case_pre_days as referred_pre_person_days,
        mh.case_post_events as referred_post_events,
        mh.case_post_days as referred_post_person_days,
        mh.control_pre_events,
        mh.control_pre_days as control_pre_person_days,
        mh.control_post_events,
        mh.control_post_days as control_post_person_days,
        mh.sum_a / nullif(mh.sum_b, 0) as ratio,
        case when mh.matched_sets >= 2 and mh.sum_a > 0 and mh.sum_b > 0
            then sqrt(variance.variance_numerator) / mh.sum_a end as log_se
    from comparisons
    left join mantel_haenszel as mh
        on mh.subgroup = comparisons.subgroup
        and mh.measure = comparisons.measure
    left join mantel_haenszel_variance as variance
        on variance.subgroup = comparisons.subgroup
        and variance.measure = comparisons.measure
),

descriptive as (
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

estimates as (
    select
        subgroup, measure, estimate, kind, referred_patients, control_patients,
        cases_with_controls, referred_pre_events, referred_pre_person_days,
        referred_post_events, referred_post_person_days, control_pre_events,
        control_pre_person_days, control_post_events, control_post_person_days, ratio, log_se
    from effects
    union all
    select
        subgroup, measure, estimate, 'descriptive' as kind, referred_patients,
        control_patients, cases_with_controls, referred_pre_events, referred_pre_person_days,
        referred_post_events, referred_post_person_days, control_pre_events,
        control_pre_person_days, control_post_events, control_post_person_days, ratio, log_se
    from descriptive
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
    kind,
    cast(referred_patients as {{ dbt.type_bigint() }}) as referred_patients,
    cast(control_patients as {{ dbt.type_bigint() }}) as control_patients,
    cast(cases_with_controls as {{ dbt.type_bigint() }}) as cases_with_controls,
    {%- for cohort in ['referred', 'control'] %}
    {%- for window_name in ['pre', 'post'] %}
    cast({{ cohort }}_{{ window_name }}_events as {{ dbt.type_bigint() }})
        as {{ cohort }}_{{ window_name }}_events,
    round({{ cohort }}_{{ window_name }}_person_days / cast(365.25 as {{ dbt.type_float() }}), 4)
        as {{ cohort }}_{{ window_name }}_person_years,
    {%- endfor %}
    {%- endfor %}
    round(ratio, 4) as ratio,
    round(interval_log_se, 6) as log_se,
    round({{ ci_bound('ratio', 'interval_log_se', 'lower') }}, 4) as ci_lower,
    round({{ ci_bound('ratio', 'interval_log_se', 'upper') }}, 4) as ci_upper
from bounded
