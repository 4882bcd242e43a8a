-- Health-service use as one event stream: the events of every declared outcome measure
-- (var outcome_measures: its source table and filter), keyed by their record ids, with the
-- consultation mode for the measures counted by mode.

{%- set sources = var('outcome_sources') %}

{%- for measure, spec in var('outcome_measures').items() %}
{%- set source = sources[spec['source']] %}

select
    practice_id,
    patient_id,
    {{ source['event_date'] }} as event_date,
    '{{ measure }}' as measure,
    {{ source['record_id'] }} as record_id,
    {% if spec.get('by_mode') -%}
    {{ source['mode'] }}{{ ' as mode' if source['mode'] != 'mode' }}
    {%- else -%}
    cast(null as {{ dbt.type_string() }}) as mode
    {%- endif %}
from {{ ref(source['model']) }}
{%- if spec.get('filter') %}
where {{ spec['filter'] }}
{%- endif %}
{{ 'union all' if not loop.last }}
{%- endfor %}
