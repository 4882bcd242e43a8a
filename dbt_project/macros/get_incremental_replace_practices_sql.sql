{#- Incremental strategy `replace_practices`: delete every row of the practices in the build
    scope, then insert the rows just built for them. Unlike delete+insert on a unique key, it
    also removes the rows of a practice that now has none (a referred patient who is no longer
    one). Plain DELETE and INSERT, so it runs on any engine with row-level deletes; on Spark,
    `insert_overwrite` with `partition_by: practice_id` does the same per partition. -#}
{% macro get_incremental_replace_practices_sql(arg_dict) -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ arg_dict['target_relation'] }}
    where practice_id in (select practice_id from {{ ref('stg_audit__build_scope') }});

    insert into {{ arg_dict['target_relation'] }} ({{ columns }})
    select {{ columns }} from {{ arg_dict['temp_relation'] }}
{%- endmacro %}
