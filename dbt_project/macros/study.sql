{#- The study's declaration (the vars of dbt_project.yml) as the models use it: measures,
    consultation modes, age bands and breakdown groups. Python reads the same vars
    (src/sprx_pipeline/study.py). -#}

{#- The names of the outcome measures, in declared order. -#}
{% macro outcome_measures() -%}
    {{ return(var('outcome_measures').keys() | list) }}
{%- endmacro %}

{#- The measures counted per consultation mode. -#}
{% macro measures_by_mode() -%}
    {%- set names = [] -%}
    {%- for name, spec in var('outcome_measures').items() if spec.get('by_mode') -%}
        {%- do names.append(name) -%}
    {%- endfor -%}
    {{ return(names) }}
{%- endmacro %}

{#- The per-person count columns of one window, in published order: each measure, then each
    by-mode measure's count per mode. -#}
{% macro window_count_columns(window_name) -%}
    {%- set columns = [] -%}
    {%- for measure in outcome_measures() -%}
        {%- do columns.append(window_name ~ '_' ~ measure) -%}
    {%- endfor -%}
    {%- for measure in measures_by_mode() -%}
        {%- for mode in var('consultation_modes') -%}
            {%- do columns.append(window_name ~ '_' ~ measure ~ '_' ~ mode) -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(columns) }}
{%- endmacro %}

{#- The breakdown groups of sp_measures, or with monthly=true those of sp_uptake_monthly. -#}
{% macro breakdowns(monthly=false) -%}
    {%- set names = [] -%}
    {%- for name, spec in var('breakdowns').items() if spec.get('monthly') or not monthly -%}
        {%- do names.append(name) -%}
    {%- endfor -%}
    {{ return(names) }}
{%- endmacro %}

{#- A breakdown column from the patient attribute of its name (`expression`, e.g.
    attributes.region), as the marts show it: the declared `unknown` value, as text, when
    missing. -#}
{% macro breakdown_column(group, expression) -%}
    {%- set unknown = var('breakdowns')[group].get('unknown') -%}
    {%- if unknown is none -%}
        {{ expression }}
    {%- else -%}
        coalesce(cast({{ expression }} as {{ dbt.type_string() }}), '{{ unknown }}') as {{ group }}
    {%- endif -%}
{%- endmacro %}

{#- The labels of the declared age bands (see macros/age_band.sql), for tests. -#}
{% macro age_band_labels() -%}
    {%- set edges = var('age_bands') -%}
    {%- set labels = [] -%}
    {%- for edge in edges[1:] -%}
        {%- do labels.append(edges[loop.index0] ~ '-' ~ (edge - 1)) -%}
    {%- endfor -%}
    {%- do labels.append(edges[-1] ~ '+') -%}
    {{ return(labels) }}
{%- endmacro %}

{#- "a = a_m1 + a_m2 + ...": a by-mode measure's count is the sum of its counts per mode. -#}
{% macro modes_add_up(window_name) -%}
    {%- set checks = [] -%}
    {%- for measure in measures_by_mode() -%}
        {%- set column = window_name ~ '_' ~ measure -%}
        {%- set parts = [] -%}
        {%- for mode in var('consultation_modes') -%}
            {%- do parts.append(column ~ '_' ~ mode) -%}
        {%- endfor -%}
        {%- do checks.append(column ~ ' = ' ~ parts | join(' + ')) -%}
    {%- endfor -%}
    {{ return(checks | join(' and ') if checks else 'true') }}
{%- endmacro %}

{#- "1, 2, ..., n": the first n columns of a select, for a group by over a declared list. -#}
{% macro positions(n) -%}
    {%- for position in range(1, n + 1) -%}
        {{ position }}{{ ', ' if not loop.last }}
    {%- endfor -%}
{%- endmacro %}
