{#- Engine-specific bodies of dbt's own cross-database macros. dbt_project.yml's `dispatch`
    puts this project first in the search order, so `dbt.type_float()` and `dbt.listagg()` in
    the models take these bodies on DuckDB and Spark, and dbt's elsewhere. -#}

{#- A 64-bit float on both engines. dbt's default is `float`, which DuckDB and Spark read as
    a 32-bit REAL: a weight of 1/3 kept 7 digits, and the two engines' sums then differed
    beyond the 1e-9 they are compared to. -#}
{% macro duckdb__type_float() -%}
    {{ return('double') }}
{%- endmacro %}

{% macro spark__type_float() -%}
    {{ return('double') }}
{%- endmacro %}

{#- Ordered string aggregation on Spark: dbt-spark's listagg ignores the order (it warns and
    uses collect_list, whose order is that of the shuffle). Spark 4.0's listagg ... within
    group (order by ...) honours it; the first `limit_num` items are split off the ordered
    string at a separator that cannot occur in text (the unit separator, char 31). -#}
{% macro spark__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {%- set ordered = 'within group (' ~ order_by_clause ~ ')' if order_by_clause else '' -%}
    {%- if limit_num -%}
        array_join(slice(split(listagg({{ measure }}, char(31)) {{ ordered }}, char(31)),
                         1, {{ limit_num }}), {{ delimiter_text }})
    {%- else -%}
        listagg({{ measure }}, {{ delimiter_text }}) {{ ordered }}
    {%- endif -%}
{%- endmacro %}
