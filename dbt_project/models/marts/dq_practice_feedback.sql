-- Data-quality feedback for each practice and delivery: rows received, loaded and
-- quarantined per table, the rules broken most, and SP referral-code prevalence set against
-- the practice's source system (coding gaps by system are the known weakness of SP data).
-- Outliers are flagged as on a funnel plot: a practice is 'low' or 'high' when its count of
-- referred patients lies more than 3 standard deviations (binomial, at its system's
-- prevalence) from the count expected for its size (Spiegelhalter, Stat Med 2005). Practices
-- differ by more than chance (overdispersion): with at least 10 assessable practices the
-- limits widen by sqrt(phi), phi the mean squared z-score winsorised at its 10th and 90th
-- percentiles (Spiegelhalter, Qual Saf Health Care 2005), so that the flag marks the
-- practices that stand out from the others, not half of a large network.

{%- set tables = ['practices', 'patients', 'registrations', 'consultations',
                  'clinical_events', 'hospital_attendances'] %}

{%- set funnel_sd = 3 %}
{%- set min_expected = 5 %}
{%- set min_practices_for_dispersion = 10 %}

with practice_tables as (
    select * from {{ ref('stg_audit__delivery_practice_tables') }}
),

deliveries as (
    select * from {{ ref('stg_audit__deliveries') }}
),

delivery_practices as (
    select * from {{ ref('stg_audit__delivery_practices') }}
),

practices as (
    select * from {{ ref('int_practice_extracts') }}
),

spans as (
    select * from {{ ref('int_registered_spans') }}
),

sp_events as (
    select * from {{ ref('int_sp_events') }}
),

quarantine as (
    select * from {{ ref('stg_audit__quarantine') }}
),

accounting as (
    select
        delivery_id,
        practice_id,
        {%- for table in tables %}
        sum(case when table_name = '{{ table }}' then received else 0 end) as {{ table }}_received,
        sum(case when table_name = '{{ table }}' then loaded else 0 end) as {{ table }}_loaded,
        sum(case when table_name = '{{ table }}' then quarantined else 0 end)
            as {{ table }}_quarantined,
        {%- endfor %}
        sum(received) as rows_received,
        sum(loaded) as rows_loaded,
        sum(quarantined) as rows_quarantined
    from practice_tables
    group by delivery_id, practice_id
),

rule_counts as (
    select delivery_id, practice_id, rule, count(*) as broken
    from quarantine
    group by delivery_id, practice_id, rule
),

top_rules as (
    select
        delivery_id,
        practice_id,
        {{ dbt.listagg("rule || ' (' || cast(broken as " ~ dbt.type_string() ~ ") || ')'",
                       "'; '", "order by broken desc, rule", 3) }} as top_quarantine_rules
    from rule_counts
    group by delivery_id, practice_id
),

study_population as (
    select distinct practice_id, patient_id
    from spans
    where span_start <= {{ study_date('study_end') }}
        and span_end >= {{ study_date('study_start') }}
),

referred as (
    select distinct practice_id, patient_id
    from sp_events
    where category = 'referral'
        and while_registered
        and event_date between {{ study_date('study_start') }} and {{ study_date('study_end') }}
),

prevalence as (
    select
        study_population.practice_id,
        count(*) as study_patients,
        count(referred.patient_id) as referred_patients
    from study_population
    left join referred
        on referred.practice_id = study_population.practice_id
        and referred.patient_id = study_population.patient_id
    group by study_population.practice_id
),

practice_prevalence as (
    select
        practices.practice_id,
        practices.source_system,
        coalesce(prevalence.study_patients, 0) as study_patients,
        coalesce(prevalence.referred_patients, 0) as referred_patients
    from practices
    left join prevalence on prevalence.practice_id = practices.practice_id
),

system_prevalence as (
    select
        source_system,
        cast(1.0 as {{ dbt.type_float() }}) * sum(referred_patients)
        / nullif(sum(study_patients), 0) as system_proportion
    from practice_prevalence
    group by source_system
),

overall_prevalence as (
    select
        cast(1.0 as {{ dbt.type_float() }}) * sum(referred_patients)
        / nullif(sum(study_patients), 0) as overall_proportion
    from practice_prevalence
),

funnel as (
    select
        practice_prevalence.practice_id,
        system_prevalence.system_proportion,
        practice_prevalence.study_patients * system_prevalence.system_proportion as expected,
        sqrt(practice_prevalence.study_patients * system_prevalence.system_proportion
            * (1 - system_prevalence.system_proportion)) as binomial_sd,
        practice_prevalence.referred_patients
    from practice_prevalence
    inner join system_prevalence
        on system_prevalence.source_system = practice_prevalence.source_system
),

z_scores as (
    select
        practice_id,
        system_proportion,
        case when expected >= {{ min_expected }} and binomial_sd > 0
            then (referred_patients - expected) / binomial_sd
        end as raw_z_score
    from funnel
),

winsor_limits as (
    select
        {{ quantile('raw_z_score', 0.1) }} as z_p10,
        {{ quantile('raw_z_score', 0.9) }} as z_p90,
        count(raw_z_score) as assessable_practices
    from z_scores
),

dispersion as (
    select
        case when max(winsor_limits.assessable_practices) >= {{ min_practices_for_dispersion }}
            then greatest(1.0, avg(
                least(greatest(z_scores.raw_z_score, winsor_limits.z_p10), winsor_limits.z_p90)
                * least(greatest(z_scores.raw_z_score, winsor_limits.z_p10), winsor_limits.z_p90)))
            else 1.0
        end as phi
    from z_scores
    cross join winsor_limits
    where z_scores.raw_z_score is not null
),

flagged as (
    select
        z_scores.practice_id,
        z_scores.system_proportion,
        coalesce(dispersion.phi, 1.0) as phi,
        z_scores.raw_z_score / sqrt(coalesce(dispersion.phi, 1.0)) as prevalence_z_score
    from z_scores
    cross join dispersion
)

select
    delivery_practices.practice_id,
    delivery_practices.delivery_id,
    deliveries.source_system,
    deliveries.extracted_at,
    deliveries.delivery_id = practices.latest_delivery_id as is_latest_delivery,
    {%- for table in tables %}
    {%- for measure in ['received', 'loaded', 'quarantined'] %}
    cast(coalesce(accounting.{{ table }}_{{ measure }}, 0) as {{ dbt.type_bigint() }})
        as {{ table }}_{{ measure }},
    {%- endfor %}
    {%- endfor %}
    {%- for measure in ['received', 'loaded', 'quarantined'] %}
    cast(coalesce(accounting.rows_{{ measure }}, 0) as {{ dbt.type_bigint() }}) as rows_{{ measure }},
    {%- endfor %}
    round(cast(1.0 as {{ dbt.type_float() }}) * coalesce(accounting.rows_quarantined, 0)
        / nullif(accounting.rows_received, 0), 4) as quarantine_share,
    top_rules.top_quarantine_rules,
    practice_prevalence.study_patients,
    practice_prevalence.referred_patients,
    round(cast(100.0 as {{ dbt.type_float() }}) * practice_prevalence.referred_patients
        / nullif(practice_prevalence.study_patients, 0), 3) as sp_code_prevalence,
    round(cast(100.0 as {{ dbt.type_float() }}) * flagged.system_proportion, 3) as system_sp_code_prevalence,
    round(cast(100.0 as {{ dbt.type_float() }}) * overall_prevalence.overall_proportion, 3)
        as all_practices_sp_code_prevalence,
    round((cast(1.0 as {{ dbt.type_float() }}) * practice_prevalence.referred_patients
        / nullif(practice_prevalence.study_patients, 0))
        / nullif(flagged.system_proportion, 0), 3) as prevalence_ratio_to_system,
    round(flagged.prevalence_z_score, 2) as prevalence_z_score,
    round(flagged.phi, 3) as prevalence_overdispersion,
    case
        when flagged.prevalence_z_score is null then 'not_assessable'
        when flagged.prevalence_z_score < -{{ funnel_sd }} then 'low'
        when flagged.prevalence_z_score > {{ funnel_sd }} then 'high'
        else 'within_limits'
    end as prevalence_flag
from delivery_practices
inner join deliveries
    on deliveries.delivery_id = delivery_practices.delivery_id
    and deliveries.status = 'applied'
left join accounting
    on accounting.delivery_id = delivery_practices.delivery_id
    and accounting.practice_id = delivery_practices.practice_id
left join practices
    on practices.practice_id = delivery_practices.practice_id
left join practice_prevalence
    on practice_prevalence.practice_id = delivery_practices.practice_id
left join flagged
    on flagged.practice_id = delivery_practices.practice_id
left join top_rules
    on top_rules.delivery_id = delivery_practices.delivery_id
    and top_rules.practice_id = delivery_practices.practice_id
cross join overall_prevalence
