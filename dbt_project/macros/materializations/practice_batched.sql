{#- Materialization `practice_batched`: a per-practice model built a batch of practices at a
    time, so that its memory is bounded by the batch, not by the network (RSC's 4 million
    patients in a thousand practices build under DuckDB's 4 GB cap).

    The practices to build are the build scope's (stg_audit__build_scope: every practice on
    a full rebuild, those with new deliveries otherwise), in order, `practices_per_batch` at
    a time. The model's SQL reads its inputs through `in_build_scope()`, which for this
    materialization renders `practice_id in (__sprx_practices__)`; each batch replaces the
    placeholder with its practices' ids, as constants, so that DuckDB skips the row groups of
    other practices (rows sit together by practice). A full rebuild replaces the table; an
    incremental build first deletes the scope's practices. Everything runs in one
    transaction: a failed or killed build leaves the table as it was. -#}
{% materialization practice_batched, adapter='duckdb' -%}
  {%- set existing = load_cached_relation(this) -%}
  {%- set target = this.incorporate(type='table') -%}
  {%- set scope = ref('stg_audit__build_scope') -%}
  {%- set rebuild = existing is none or should_full_refresh() -%}
  {%- set size = var('practices_per_batch') | int -%}
  {%- set practices = run_query('select practice_id from ' ~ scope ~ ' order by 1').columns[0].values()
                      if execute else [] -%}
  {#- The table's columns, from binding the model's SQL for no practice (nothing is read).
      The table is created with them rather than by `create table ... as select ... limit 0`:
      DuckDB 2.0 finds no row of a table so created and filled from another table in the same
      transaction with any filter on it (tests/test_duckdb_behaviour.py). -#}
  {%- set described = run_query('describe select * from ('
                                ~ sql | replace('__sprx_practices__', 'null')
                                ~ ') as batch_model') if execute else none -%}
  {%- set columns = [] -%}
  {%- for row in (described.rows if described else []) -%}
    {%- do columns.append(adapter.quote(row[0]) ~ ' ' ~ row[1]) -%}
  {%- endfor -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% call statement('prepare') -%}
    {% if rebuild -%}
    create or replace table {{ target }} ({{ columns | join(', ') }})
    {%- else -%}
    delete from {{ target }} where practice_id in (select practice_id from {{ scope }})
    {%- endif %}
  {%- endcall %}
  {%- for start in range(0, practices | length, size) %}
    {%- set members = practices[start:start + size] %}
    {%- do log(this.identifier ~ ': practices ' ~ (start + 1) ~ '-' ~ (start + members | length)
               ~ ' of ' ~ (practices | length), info=(practices | length) > size) %}
    {% call statement('batch') -%}
      insert into {{ target }} select * from (
        {{ sql | replace('__sprx_practices__', "'" ~ members | join("', '") ~ "'") }}
      ) as batch_model
    {%- endcall %}
  {%- endfor %}
  {% call statement('main') -%}
    select {{ practices | length }} as practices
  {%- endcall %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target]}) }}
{%- endmaterialization %}

{#- Every other engine (Spark, Databricks): the adapter's own table materialization. A Spark
    cluster spreads the table's rows over its executors, so batching buys nothing there, and
    Spark builds are always full (docs/spark.md). `sprx_batched()` is false on
    these engines, so the model's SQL reads every practice (`in_build_scope()` renders
    `1 = 1`). dbt has no dispatch for materializations (dbt-core#7799): this looks up the
    adapter's, as dbt-spark's clone materialization does for views. -#}
{% materialization practice_batched, default -%}
  {%- set search_name = 'materialization_table_' ~ adapter.type() -%}
  {%- if search_name not in context -%}
    {%- set search_name = 'materialization_table_spark' if 'materialization_table_spark' in context
                          else 'materialization_table_default' -%}
  {%- endif -%}
  {%- set table_materialization = context[search_name] -%}
  {{ return(table_materialization()) }}
{%- endmaterialization %}
