-- Uptake of social prescribing by month, overall and by group.
-- registered_patients: registered on the 15th of the month; referred_patients and
-- declined_patients: with such an event in the month while registered.

{%- set groups = ['age_band', 'sex', 'ethnicity', 'imd_quintile', 'region', 'source_system'] %}

with spans as (
    select * from {{ ref('int_registered_spans') }}
),

sp_events as (
    select * from {{ ref('int_sp_events') }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }}
),

months as (
    {{ month_spine(study_date('study_start'), study_date('study_end')) }}
),

registered_mid_month as (
    select months.month, spans.practice_id, spans.patient_id
    from months
    inner join spans
        on {{ add_days('months.month', 14) }} between spans.span_start and spans.span_end
),

coded_in_month as (
    select
        cast({{ dbt.date_trunc('month', 'event_date') }} as date) as month,
        practice_id,
        patient_id,
        max(case when category = 'referral' then 1 else 0 end) as referred,
        max(case when category = 'declined' then 1 else 0 end) as declined
    from sp_events
    where while_registered and category in ('referral', 'declined')
    group by 1, 2, 3
),

patient_months as (
    select
        coalesce(registered_mid_month.month, coded_in_month.month) as month,
        coalesce(registered_mid_month.practice_id, coded_in_month.practice_id) as practice_id,
        coalesce(registered_mid_month.patient_id, coded_in_month.patient_id) as patient_id,
        case when registered_mid_month.patient_id is not null then 1 else 0 end as registered,
        coalesce(coded_in_month.referred, 0) as referred,
        coalesce(coded_in_month.declined, 0) as declined
    from registered_mid_month
    full outer join coded_in_month
        on coded_in_month.month = registered_mid_month.month
        and coded_in_month.practice_id = registered_mid_month.practice_id
        and coded_in_month.patient_id = registered_mid_month.patient_id
    where coalesce(registered_mid_month.month, coded_in_month.month) in (select month from months)
),

cells as (
    select
        patient_months.month,
        {{ age_band('extract(year from patient_months.month) - attributes.year_of_birth') }}
            as age_band,
        attributes.sex,
        attributes.ethnicity,
        coalesce(cast(attributes.imd_quintile as {{ dbt.type_string() }}), 'unknown')
            as imd_quintile,
        coalesce(attributes.region, 'unknown') as region,
        attributes.source_system,
        sum(patient_months.referred) as referred_patients,
        sum(patient_months.declined) as declined_patients,
        sum(patient_months.registered) as registered_patients
    from patient_months
    inner join attributes
        on attributes.practice_id = patient_months.practice_id
        and attributes.patient_id = patient_months.patient_id
    group by 1, 2, 3, 4, 5, 6, 7
),

by_group as (
    select month, 'all' as group_type, 'all' as group_value,
        sum(referred_patients) as referred_patients,
        sum(declined_patients) as declined_patients,
        sum(registered_patients) as registered_patients
    from cells
    group by month
    {%- for group in groups %}
    union all
    select month, '{{ group }}' as group_type, {{ group }} as group_value,
        sum(referred_patients), sum(declined_patients), sum(registered_patients)
    from cells
    group by month, {{ group }}
    {%- endfor %}
)

select
    month,
    group_type,
    group_value,
    cast(referred_patients as {{ dbt.type_bigint() }}) as referred_patients,
    cast(declined_patients as {{ dbt.type_bigint() }}) as declined_patients,
    cast(registered_patients as {{ dbt.type_bigint() }}) as registered_patients,
    case when registered_patients > 0
        then round(100000.0 * referred_patients / registered_patients, 2)
    end as rate_per_100k
from by_group
