{#- A date moved by a whole number of months, as a DATE on every engine. -#}
{% macro add_months(date_expression, months) -%}
    {{ return(adapter.dispatch('add_months', 'sprx')(date_expression, months)) }}
{%- endmacro %}

{% macro default__add_months(date_expression, months) -%}
    cast({{ dbt.dateadd('month', months, date_expression) }} as date)
{%- endmacro %}

{#- Spark: add_months() on the date (the last day of a shorter month for the 29th to 31st,
    as DuckDB's date + interval does); see spark__add_days. -#}
{% macro spark__add_months(date_expression, months) -%}
    add_months(cast({{ date_expression }} as date), {{ months }})
{%- endmacro %}
