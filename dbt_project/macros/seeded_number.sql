{#- A non-negative integer below 2^32 drawn from the text of an expression: the first 32
    bits of its md5 (dbt.hash). The same text gives the same number on every engine and
    every run, so an order keyed on it is fixed by `matching_seed`. -#}
{% macro seeded_number(text_expression) -%}
    {{ return(adapter.dispatch('seeded_number', 'sprx')(text_expression)) }}
{%- endmacro %}

{% macro duckdb__seeded_number(text_expression) -%}
    cast(('0x' || substr({{ dbt.hash(text_expression) }}, 1, 8)) as bigint)
{%- endmacro %}

{#- Spark, Databricks and most engines with conv(): hexadecimal digits to a base-10 string. -#}
{% macro default__seeded_number(text_expression) -%}
    cast(conv(substr({{ dbt.hash(text_expression) }}, 1, 8), 16, 10) as {{ dbt.type_bigint() }})
{%- endmacro %}
