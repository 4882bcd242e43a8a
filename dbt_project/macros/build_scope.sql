{#- The build scope that `sprx build` (or Airflow's start_build) recorded in the warehouse:
    whether this build rebuilds everything, and which practices it rebuilds otherwise
    (src/sprx_pipeline/scope.py). Read from the audit tables, not from a dbt var, so that
    Cosmos's one-model-per-task runs with fixed vars see the same scope as `sprx build`. -#}

{#- True when the latest recorded build is a full rebuild, or when none is recorded
    (dbt run by hand on a fresh file): then every incremental model is rebuilt whole. -#}
{% macro build_scope_is_full() -%}
    {%- if not execute -%}{{ return(true) }}{%- endif -%}
    {#- Incremental builds are DuckDB's only (README): other engines always build in full. -#}
    {%- if target.type != 'duckdb' -%}{{ return(true) }}{%- endif -%}
    {%- set scopes = adapter.get_relation(database=target.get('database'), schema='audit',
                                          identifier='build_scopes') -%}
    {%- if scopes is none -%}{{ return(true) }}{%- endif -%}
    {%- set latest = run_query('select full_rebuild from ' ~ scopes ~ ' where started_at = '
                               ~ '(select max(started_at) from ' ~ scopes ~ ')') -%}
    {{ return(latest.rows | length == 0 or latest.rows[0][0]) }}
{%- endmacro %}

{#- A query of the practices the latest build rebuilds, given the two audit relations. -#}
{% macro build_scope_practices(scopes, practices) -%}
    select practices.practice_id
    from {{ practices }} as practices
    inner join {{ scopes }} as scopes
        on scopes.build_id = practices.build_id
    where scopes.started_at = (select max(started_at) from {{ scopes }})
{%- endmacro %}

{#- A filter for a per-practice model's inputs. A `practice_batched` model (see its
    materialization) reads only the practices of the batch it is building, which the
    materialization writes in place of `__sprx_practices__`; the incremental Python model,
    only the practices of the build scope; anything else, every row. Always renders the ref,
    so dbt records the dependency when it parses the model. -#}
{% macro in_build_scope(practice_column='practice_id') -%}
    {%- set scope = ref('stg_audit__build_scope') -%}
    {%- if sprx_batched() -%}
        {{ practice_column }} in (__sprx_practices__)
    {%- elif is_incremental() -%}
        {{ practice_column }} in (select practice_id from {{ scope }})
    {%- else -%}
        1 = 1
    {%- endif -%}
{%- endmacro %}

{#- Whether the model being rendered is built a batch of practices at a time: DuckDB's
    practice_batched materialization; on Spark the same materialization builds a plain table
    (materializations/practice_batched.sql). A unit test overrides it to false, so that it
    tests the model's SQL over its given rows. -#}
{% macro sprx_batched() -%}
    {{ return(config.get('materialized') == 'practice_batched' and target.type == 'duckdb') }}
{%- endmacro %}
