{#- A date moved by a whole number of months, as a DATE on every engine. -#}
{% macro add_months(date_expression, months) -%}
    cast({{ dbt.dateadd('month', months, date_expression) }} as date)
{%- endmacro %}
