-- Window totals per subgroup, matched set, cohort and measure: the clusters of the robust
-- variance in sp_outcome_rates and sp_effect_estimates. A matched set is one referred patient
-- (the case) and the controls drawn for them; every set is in subgroup `all`, and sets whose
-- case had a homeless finding before index are also in subgroup `homeless`.

{%- set measures = outcome_measures() %}

with cohort_outcomes as (
    select * from {{ ref('int_cohort_outcomes') }}
),

homeless as (
    select * from {{ ref('int_homeless_findings') }}
),

cases as (
    select practice_id, case_patient_id, index_date
    from cohort_outcomes
    where cohort = 'referred'
),

subgroups as (
    select practice_id, case_patient_id, 'all' as subgroup
    from cases

    union all

    select cases.practice_id, cases.case_patient_id, 'homeless' as subgroup
    from cases
    inner join homeless
        on homeless.practice_id = cases.practice_id
        and homeless.patient_id = cases.case_patient_id
        and homeless.first_homeless_date < cases.index_date
),

by_measure as (
    {%- for measure in measures %}
    select
        practice_id,
        case_patient_id,
        cohort,
        '{{ measure }}' as measure,
        pre_{{ measure }} as pre_events,
        pre_days,
        post_{{ measure }} as post_events,
        post_days
    from cohort_outcomes
    {{ 'union all' if not loop.last }}
    {%- endfor %}
)

select
    subgroups.subgroup,
    by_measure.practice_id,
    by_measure.case_patient_id,
    by_measure.cohort,
    by_measure.measure,
    count(*) as patients,
    cast(sum(by_measure.pre_events) as {{ dbt.type_bigint() }}) as pre_events,
    cast(sum(by_measure.pre_days) as {{ dbt.type_bigint() }}) as pre_person_days,
    cast(sum(by_measure.post_events) as {{ dbt.type_bigint() }}) as post_events,
    cast(sum(by_measure.post_days) as {{ dbt.type_bigint() }}) as post_person_days
from by_measure
inner join subgroups
    on subgroups.practice_id = by_measure.practice_id
    and subgroups.case_patient_id = by_measure.case_patient_id
group by
    subgroups.subgroup,
    by_measure.practice_id,
    by_measure.case_patient_id,
    by_measure.cohort,
    by_measure.measure
