{#- The p-th quantile of an expression over a group, interpolated (p between 0 and 1). -#}
{% macro quantile(expression, p) -%}
    {{ return(adapter.dispatch('quantile', 'sprx')(expression, p)) }}
{%- endmacro %}

{% macro duckdb__quantile(expression, p) -%}
    quantile_cont({{ expression }}, {{ p }})
{%- endmacro %}

{% macro default__quantile(expression, p) -%}
    percentile_cont({{ p }}) within group (order by {{ expression }})
{%- endmacro %}
