{#- Generic test: no two rows share the same values of `columns` (dbt_utils-style, no package needed).
    Column names are quoted by the engine (a keyword such as `window` may be one of them). -#}
{% test unique_combination(model, columns) %}
    {%- set quoted = [] -%}
    {%- for column in columns -%}{%- do quoted.append(adapter.quote(column)) -%}{%- endfor %}
    select {{ quoted | join(', ') }}, count(*) as duplicates
    from {{ model }}
    group by {{ quoted | join(', ') }}
    having count(*) > 1
{% endtest %}
