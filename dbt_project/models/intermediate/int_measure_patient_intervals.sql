-- One row per patient and measure interval in which the patient was registered on at least
-- one day: the population of the uptake measures. Carries whether the patient had a referral
-- while registered in the interval, how many referral and declined codes, and the groups
-- (age in the interval's first year; `unknown` when missing; homeless when a homeless
-- finding was recorded before the interval starts).
-- A view: at 1,000,000 patients it is 46 million rows, which int_measure_practice_cells
-- reads once for the practices a build rebuilds; writing them to a table cost four times as
-- long as computing them.

{{ config(materialized='view') }}

with intervals as (
    select * from {{ ref('int_measure_intervals') }}
),

spans as (
    select * from {{ ref('int_registered_spans') }}
),

sp_events as (
    select * from {{ ref('int_sp_events') }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }}
),

homeless as (
    select * from {{ ref('int_homeless_findings') }}
),

registered as (
    select distinct
        intervals.period,
        intervals.interval_start,
        intervals.interval_end,
        spans.practice_id,
        spans.patient_id
    from intervals
    inner join spans
        on spans.span_start <= intervals.interval_end
        and spans.span_end >= intervals.interval_start
),

coded as (
    select
        intervals.period,
        intervals.interval_start,
        sp_events.practice_id,
        sp_events.patient_id,
        sum(case when sp_events.category = 'referral' then 1 else 0 end) as referral_codes,
        sum(case when sp_events.category = 'declined' then 1 else 0 end) as declined_codes
    from intervals
    inner join sp_events
        on sp_events.event_date between intervals.interval_start and intervals.interval_end
    where sp_events.while_registered and sp_events.category in ('referral', 'declined')
    group by intervals.period, intervals.interval_start, sp_events.practice_id, sp_events.patient_id
)

select
    registered.period,
    registered.interval_start,
    registered.interval_end,
    registered.practice_id,
    registered.patient_id,
    case when coalesce(coded.referral_codes, 0) > 0 then 1 else 0 end as referred,
    coalesce(coded.referral_codes, 0) as referral_codes,
    coalesce(coded.declined_codes, 0) as declined_codes,
    {{ age_band('extract(year from registered.interval_start) - attributes.year_of_birth') }}
        as age_band,
    attributes.sex,
    attributes.ethnicity,
    coalesce(cast(attributes.imd_quintile as {{ dbt.type_string() }}), 'unknown')
        as imd_quintile,
    coalesce(attributes.region, 'unknown') as region,
    coalesce(attributes.rural_urban, 'unknown') as rural_urban,
    attributes.source_system,
    coalesce(homeless.first_homeless_date < registered.interval_start, false) as homeless
from registered
inner join attributes
    on attributes.practice_id = registered.practice_id
    and attributes.patient_id = registered.patient_id
left join coded
    on coded.period = registered.period
    and coded.interval_start = registered.interval_start
    and coded.practice_id = registered.practice_id
    and coded.patient_id = registered.patient_id
left join homeless
    on homeless.practice_id = registered.practice_id
    and homeless.patient_id = registered.patient_id
