{#- A date moved by a whole number of days, as a DATE on every engine. -#}
{% macro add_days(date_expression, days) -%}
    {{ return(adapter.dispatch('add_days', 'sprx')(date_expression, days)) }}
{%- endmacro %}

{% macro default__add_days(date_expression, days) -%}
    cast({{ dbt.dateadd('day', days, date_expression) }} as date)
{%- endmacro %}

{#- Spark: date_add() on the date. dbt-spark's dateadd goes through Unix timestamps and
    repeats its argument four times, so nested calls grew into SQL that took Spark's
    optimiser tens of seconds. -#}
{% macro spark__add_days(date_expression, days) -%}
    date_add(cast({{ date_expression }} as date), {{ days }})
{%- endmacro %}
