{#- A study-date var as a DATE literal, e.g. study_date('study_start'). -#}
{% macro study_date(var_name) -%}
    cast('{{ var(var_name) }}' as date)
{%- endmacro %}
