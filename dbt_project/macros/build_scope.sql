{#- The build this dbt run belongs to, and what it rebuilds. `sprx build`, Airflow's Cosmos
    tasks and the Spark build all pass it in the environment variable SPRX_BUILD
    (`scope.dbt_env` in src/sprx_pipeline/scope.py, the one place it is made); a person may
    pass the same value as the dbt var `sprx_build` instead, which wins when both are given.
    It is JSON text (Airflow renders a templated value as text) or, as a var typed by hand,
    a mapping:
        {"id": "<build id>", "full_rebuild": false, "practices": ["P001", ...]}
    with `practices` only on an incremental build. Nothing here reads which build is
    "the latest" from the audit tables.

    Why an environment variable: dbt re-parses the whole project whenever its vars change,
    and this value changes with every build, so as a var it cost every incremental build a
    full parse (docs/performance.md). It is read only when `execute` is true, never while dbt
    parses, so dbt's partial parsing does not record it and survives from build to build.

    Without either (dbt run by hand, e.g. an analyst's `dbt build`) the run rebuilds every
    practice: slower than an incremental build, never wrong (docs/operations.md). Given but
    not a build (an empty or `None` rendering of Airflow's template), the run stops. -#}
{% macro sprx_build() -%}
    {%- set given = var('sprx_build', none) -%}
    {%- if given is none and execute -%}
        {%- set from_env = env_var('SPRX_BUILD', '__not_set__') -%}
        {%- set given = none if from_env == '__not_set__' else from_env -%}
    {%- endif -%}
    {%- if given is none -%}{{ return(none) }}{%- endif -%}
    {%- set build = fromjson(given) if given is string else given -%}
    {%- if not sprx_build_is_valid(build) -%}
        {{ exceptions.raise_compiler_error(
            "the build dbt runs for (SPRX_BUILD, or the dbt var sprx_build) must name it, as "
            ~ '`sprx build` passes it: {"id": "<build id>", "full_rebuild": true} or '
            ~ '{"id": "<build id>", "full_rebuild": false, "practices": [...]}; got '
            ~ (given | string)[:200]
            ~ ". Build with `sprx build` (or Airflow's sprx_warehouse DAG), or leave both out "
            ~ "to rebuild every practice (docs/operations.md, Builds)") }}
    {%- endif -%}
    {{ return(build) }}
{%- endmacro %}

{% macro sprx_build_is_valid(build) -%}
    {%- if build is not mapping -%}{{ return(false) }}{%- endif -%}
    {%- set named = build.get('id') is string and build.get('id') | length > 0 -%}
    {%- set full = build.get('full_rebuild') -%}
    {%- set practices = build.get('practices') -%}
    {%- set listed = practices is sequence and practices is not string
                     and practices is not mapping -%}
    {{ return(named and full is boolean and (full or listed)) }}
{%- endmacro %}

{#- True when this run rebuilds every practice: a full rebuild, dbt without the var, or an
    engine other than DuckDB (incremental builds are DuckDB's: docs/spark.md). Then every
    incremental model is rebuilt whole. -#}
{% macro build_scope_is_full() -%}
    {%- set build = sprx_build() -%}
    {{ return(target.type != 'duckdb' or build is none or build.full_rebuild) }}
{%- endmacro %}

{#- The practices an incremental build rebuilds, as a SQL list of string constants (`null`
    when none: a build after an interrupted publish has nothing new). -#}
{% macro build_scope_practice_list() -%}
    {%- set practices = sprx_build().practices -%}
    {%- if practices | length == 0 -%}null{%- endif -%}
    {%- for practice in practices -%}
        '{{ practice | string | replace("'", "''") }}'{{ ', ' if not loop.last }}
    {%- endfor -%}
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
