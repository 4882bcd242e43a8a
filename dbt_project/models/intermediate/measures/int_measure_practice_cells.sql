-- The uptake measures' population counted per practice, measure interval and breakdown cell:
-- patients registered on at least one day of the interval, those with a referral while
-- registered in it, and their referral and declined codes. Groups (var breakdowns): age in
-- the interval's first year; `unknown` when missing; homeless when a homeless finding was
-- recorded before the interval starts. Every count adds up across cells (a patient is in one cell per
-- interval), so sp_measures sums these rather than the 46 million patient intervals of
-- 1,000,000 patients (3.2 million cells), and an incremental build recounts only the
-- practices it rebuilds.

{%- set groups = breakdowns() %}

with intervals as (
    select * from {{ ref('int_measure_intervals') }}
),

spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

sp_events as (
    select * from {{ ref('int_sp_events') }} where {{ in_build_scope() }}
),

attributes as (
    select * from {{ ref('int_patient_attributes') }} where {{ in_build_scope() }}
),

homeless as (
    select * from {{ ref('int_homeless_findings') }} where {{ in_build_scope() }}
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
),

patient_intervals as (
    select
        registered.period,
        registered.interval_start,
        registered.interval_end,
        registered.practice_id,
        registered.patient_id,
        case when coalesce(coded.referral_codes, 0) > 0 then 1 else 0 end as referred,
        coalesce(coded.referral_codes, 0) as referral_codes,
        coalesce(coded.declined_codes, 0) as declined_codes,
        {%- for group in groups %}
        {%- if group == 'age_band' %}
        {{ age_band('extract(year from registered.interval_start) - attributes.year_of_birth') }}
            as age_band{{ ',' if not loop.last }}
        {%- elif group == 'homeless' %}
        coalesce(homeless.first_homeless_date < registered.interval_start, false)
            as homeless{{ ',' if not loop.last }}
        {%- else %}
        {{ breakdown_column(group, 'attributes.' ~ group) }}{{ ',' if not loop.last }}
        {%- endif %}
        {%- endfor %}
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
)

select
    period,
    interval_start,
    interval_end,
    practice_id,
    {{ groups | join(',\n    ') }},
    count(*) as registered,
    sum(referred) as referred,
    sum(referral_codes) as referral_codes,
    sum(declined_codes) as declined_codes
from patient_intervals
group by
    period, interval_start, interval_end, practice_id, {{ groups | join(', ') }}
