-- Data quality by GP clinical system, for reports that must not name practices: deliveries
-- applied and refused, rows received, loaded and quarantined over every applied delivery,
-- and SP referral-code prevalence over each practice's latest delivery.

with practice_feedback as (
    select * from {{ ref('dq_practice_feedback') }}
),

deliveries as (
    select * from {{ ref('stg_audit__deliveries') }}
),

applied as (
    select
        source_system,
        count(distinct practice_id) as practices,
        count(distinct delivery_id) as deliveries_applied,
        sum(rows_received) as rows_received,
        sum(rows_loaded) as rows_loaded,
        sum(rows_quarantined) as rows_quarantined,
        sum(case when is_latest_delivery then study_patients else 0 end) as study_patients,
        sum(case when is_latest_delivery then referred_patients else 0 end) as referred_patients
    from practice_feedback
    group by source_system
),

refused as (
    select
        coalesce(source_system, 'unknown') as source_system,
        count(distinct delivery_id) as deliveries_refused
    from deliveries
    where status = 'refused'
    group by coalesce(source_system, 'unknown')
),

systems as (
    select source_system from applied
    union
    select source_system from refused
)

select
    systems.source_system,
    cast(coalesce(applied.practices, 0) as {{ dbt.type_bigint() }}) as practices,
    cast(coalesce(applied.deliveries_applied, 0) as {{ dbt.type_bigint() }}) as deliveries_applied,
    cast(coalesce(refused.deliveries_refused, 0) as {{ dbt.type_bigint() }}) as deliveries_refused,
    cast(coalesce(applied.rows_received, 0) as {{ dbt.type_bigint() }}) as rows_received,
    cast(coalesce(applied.rows_loaded, 0) as {{ dbt.type_bigint() }}) as rows_loaded,
    cast(coalesce(applied.rows_quarantined, 0) as {{ dbt.type_bigint() }}) as rows_quarantined,
    round(cast(100.0 as {{ dbt.type_float() }}) * applied.rows_quarantined
        / nullif(applied.rows_received, 0), 3)
        as quarantined_percent,
    cast(coalesce(applied.study_patients, 0) as {{ dbt.type_bigint() }}) as study_patients,
    cast(coalesce(applied.referred_patients, 0) as {{ dbt.type_bigint() }}) as referred_patients,
    round(cast(100.0 as {{ dbt.type_float() }}) * applied.referred_patients
        / nullif(applied.study_patients, 0), 3)
        as sp_code_prevalence
from systems
left join applied on applied.source_system = systems.source_system
left join refused on refused.source_system = systems.source_system
