{#- Tests over the delivered tables may limit themselves to the practices this build rebuilds
    with `where: "practice_id in (__build_practices__)"`: on an incremental build only those
    practices' rows changed, and scanning tens of millions of unchanged rows would cost more
    than the build itself. On a full build the filter is dropped and every row is tested, and
    so it is for a model without a practice_id column (a calendar, a whole-network summary).
    Overrides dbt's macro of the same name, as dbt's docs suggest for custom `where` logic. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and '__build_practices__' in where -%}
        {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name')
                          | map('lower') | list if execute else [] -%}
        {%- if build_scope_is_full() or 'practice_id' not in columns -%}
            {%- set where = none -%}
        {%- else -%}
            {%- set where = where | replace('__build_practices__', build_scope_practice_list()) -%}
        {%- endif -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}
