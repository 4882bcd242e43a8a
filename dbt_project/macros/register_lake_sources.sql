{#- The sources (raw, audit, codelists) on an engine that does not read the DuckDB file: on
    Spark, each is a Parquet table that `sprx build --engine spark` wrote to the lake folder
    SPRX_LAKE_DIR (<lake>/<schema>/<table>/), registered here as an external table before any
    model runs (`on-run-start`). Dropping an external table leaves its files alone. On DuckDB
    the sources are the work file's own tables: nothing to do. -#}
{% macro register_lake_sources() %}
    {{ return(adapter.dispatch('register_lake_sources', 'sprx')()) }}
{% endmacro %}

{% macro default__register_lake_sources() %}{% endmacro %}

{% macro spark__register_lake_sources() %}
  {%- if execute -%}
    {%- set lake = env_var('SPRX_LAKE_DIR', '') | trim -%}
    {%- if not lake -%}
      {{ exceptions.raise_compiler_error("SPRX_LAKE_DIR is not set: on Spark the raw, audit and "
         ~ "codelists tables are read from Parquet in that folder; run `sprx build --engine "
         ~ "spark`, which writes them and sets it") }}
    {%- endif -%}
    {%- set created = [] -%}
    {%- for source in graph.sources.values() | sort(attribute='unique_id') -%}
      {%- if source.schema not in created -%}
        {%- do run_query('create schema if not exists ' ~ source.schema) -%}
        {%- do created.append(source.schema) -%}
      {%- endif -%}
      {%- set relation = source.schema ~ '.' ~ source.identifier -%}
      {%- do run_query('drop table if exists ' ~ relation) -%}
      {%- do run_query('create table ' ~ relation ~ " using parquet location '"
                       ~ lake.rstrip('/') ~ '/' ~ source.schema ~ '/' ~ source.identifier ~ "'") -%}
    {%- endfor -%}
  {%- endif -%}
{% endmacro %}
