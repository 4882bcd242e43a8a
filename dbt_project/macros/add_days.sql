{#- A date moved by a whole number of days, as a DATE on every engine. -#}
{% macro add_days(date_expression, days) -%}
    cast({{ dbt.dateadd('day', days, date_expression) }} as date)
{%- endmacro %}
