-- Everyone the covariate balance diagnostics compare (sp_covariate_balance), as person-trials
-- with their characteristics as of the trial date t: every eligible case (matched or not),
-- every matched control (weighted 1/k in a set of k controls, so that each matched case's
-- controls weigh as much as the case), and every sampled comparator of the population the
-- trials draw from before matching (int_trial_comparators).

with cases as (
    select * from {{ ref('int_trial_cases') }}
    where {{ in_build_scope() }} and ineligible_reason is null
),

matched_controls as (
    select * from {{ ref('int_matched_controls') }} where {{ in_build_scope() }}
),

comparators as (
    select * from {{ ref('int_trial_comparators') }} where {{ in_build_scope() }}
),

baselines as (
    select * from {{ ref('int_trial_baselines') }} where {{ in_build_scope() }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }} where {{ in_build_scope() }}
),

homeless as (
    select * from {{ ref('int_homeless_findings') }} where {{ in_build_scope() }}
),

set_sizes as (
    select practice_id, case_patient_id, count(*) as controls
    from matched_controls
    group by practice_id, case_patient_id
),

trials as (
    select
        'case' as role,
        cases.practice_id,
        cases.patient_id as case_patient_id,
        cases.patient_id,
        cases.index_date as trial_date,
        cast(1.0 as {{ dbt.type_float() }}) as weight,
        coalesce(set_sizes.controls, 0) > 0 as matched
    from cases
    left join set_sizes
        on set_sizes.practice_id = cases.practice_id
        and set_sizes.case_patient_id = cases.patient_id

    union all

    select
        'control' as role,
        matched_controls.practice_id,
        matched_controls.case_patient_id,
        matched_controls.control_patient_id as patient_id,
        cast(matched_controls.index_date as date) as trial_date,
        cast(1.0 as {{ dbt.type_float() }}) / set_sizes.controls as weight,
        true as matched
    from matched_controls
    inner join set_sizes
        on set_sizes.practice_id = matched_controls.practice_id
        and set_sizes.case_patient_id = matched_controls.case_patient_id

    union all

    select
        'comparator' as role,
        practice_id,
        case_patient_id,
        comparator_patient_id as patient_id,
        index_date as trial_date,
        cast(1.0 as {{ dbt.type_float() }}) as weight,
        cast(null as boolean) as matched
    from comparators
)

select
    trials.role,
    trials.practice_id,
    trials.case_patient_id,
    trials.patient_id,
    trials.trial_date,
    trials.weight,
    trials.matched,
    cases.homeless_before as case_homeless_before,
    extract(year from trials.trial_date) - attributes.year_of_birth as age_at_index,
    attributes.sex,
    attributes.ethnicity,
    coalesce(cast(attributes.imd_quintile as {{ dbt.type_string() }}), 'unknown') as imd_quintile,
    attributes.region,
    coalesce(homeless.first_homeless_date < trials.trial_date, false) as homeless_before,
    baselines.consultations_recent,
    baselines.consultations_recent + baselines.consultations_earlier as consultations_pre,
    baselines.ae_attendances_pre,
    baselines.emergency_admissions_pre
from trials
inner join cases
    on cases.practice_id = trials.practice_id
    and cases.patient_id = trials.case_patient_id
inner join attributes
    on attributes.practice_id = trials.practice_id
    and attributes.patient_id = trials.patient_id
inner join baselines
    on baselines.practice_id = trials.practice_id
    and baselines.patient_id = trials.patient_id
    and baselines.trial_date = trials.trial_date
left join homeless
    on homeless.practice_id = trials.practice_id
    and homeless.patient_id = trials.patient_id
