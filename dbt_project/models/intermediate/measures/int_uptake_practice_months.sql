-- Uptake counts per practice, month and monthly breakdown cell (var breakdowns): the per-practice part of
-- sp_uptake_monthly, which sums it over practices.
-- registered_patients: registered on the 15th of the month; referred_patients and
-- declined_patients: with such an event in the month while registered.

{%- set groups = breakdowns(monthly=true) %}
{%- if 'homeless' in groups %}
{{ exceptions.raise_compiler_error('breakdown homeless is not monthly: sp_uptake_monthly has no homeless dates') }}
{%- endif %}
{#- The patient attributes the monthly breakdowns come from (age bands: year of birth). #}
{%- set attributes = [] %}
{%- for group in groups %}
{%- do attributes.append('year_of_birth' if group == 'age_band' else group) %}
{%- endfor %}

with spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

sp_events as (
    select * from {{ ref('int_sp_events') }} where {{ in_build_scope() }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }} where {{ in_build_scope() }}
),

months as (
    {{ month_spine(study_date('study_start'), study_date('study_end')) }}
),

study_months as (
    select min(month) as first_study_month, max(month) as last_study_month from months
),

-- The months whose 15th a span covers, as a range: from the span's first 15th to its last.
span_months as (
    select
        spans.practice_id,
        spans.patient_id,
        greatest(
            case when extract(day from spans.span_start) <= 15
                then cast({{ dbt.date_trunc('month', 'spans.span_start') }} as date)
                else {{ add_months(dbt.date_trunc('month', 'spans.span_start'), 1) }}
            end,
            study_months.first_study_month
        ) as first_month,
        least(
            case when extract(day from spans.span_end) >= 15
                then cast({{ dbt.date_trunc('month', 'spans.span_end') }} as date)
                else {{ add_months(dbt.date_trunc('month', 'spans.span_end'), -1) }}
            end,
            study_months.last_study_month
        ) as last_month
    from spans
    cross join study_months
),

-- Patients alike in everything the breakdowns use and in their range of months are counted
-- together before the ranges are spread over months: far fewer rows than patient-months.
registered_groups as (
    select
        attributes.practice_id,
        {%- for attribute in attributes %}
        attributes.{{ attribute }},
        {%- endfor %}
        span_months.first_month,
        span_months.last_month,
        count(*) as patients
    from span_months
    inner join attributes
        on attributes.practice_id = span_months.practice_id
        and attributes.patient_id = span_months.patient_id
    where span_months.first_month <= span_months.last_month
    group by {{ positions(attributes | length + 3) }}
),

registered as (
    select
        registered_groups.practice_id,
        months.month,
        {%- for attribute in attributes %}
        registered_groups.{{ attribute }},
        {%- endfor %}
        0 as referred,
        0 as declined,
        registered_groups.patients as registered
    from registered_groups
    inner join months
        on months.month between registered_groups.first_month and registered_groups.last_month
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

coded as (
    select
        coded_in_month.practice_id,
        coded_in_month.month,
        {%- for attribute in attributes %}
        attributes.{{ attribute }},
        {%- endfor %}
        coded_in_month.referred,
        coded_in_month.declined,
        0 as registered
    from coded_in_month
    inner join attributes
        on attributes.practice_id = coded_in_month.practice_id
        and attributes.patient_id = coded_in_month.patient_id
    where coded_in_month.month in (select months.month from months)
),

patient_counts as (
    select * from registered
    union all
    select * from coded
)

select
    practice_id,
    month,
    {%- for group in groups %}
    {%- if group == 'age_band' %}
    {{ age_band('extract(year from month) - year_of_birth') }} as age_band,
    {%- else %}
    {{ breakdown_column(group, group) }},
    {%- endif %}
    {%- endfor %}
    cast(sum(referred) as {{ dbt.type_bigint() }}) as referred_patients,
    cast(sum(declined) as {{ dbt.type_bigint() }}) as declined_patients,
    cast(sum(registered) as {{ dbt.type_bigint() }}) as registered_patients
from patient_counts
group by {{ positions(groups | length + 2) }}
