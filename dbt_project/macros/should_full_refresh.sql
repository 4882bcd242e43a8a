{#- dbt's own rule (a model's `full_refresh` config, else the --full-refresh flag), plus the
    build scope the var sprx_build passes (macros/build_scope.sql): a build whose dbt
    project, codelist or vars changed since the last successful one rebuilds every
    incremental model from scratch. Overrides dbt's macro of
    the same name, which the incremental materialization and is_incremental() call. -#}
{% macro should_full_refresh() -%}
    {%- set configured = config.get('full_refresh') -%}
    {%- if configured is not none -%}{{ return(configured) }}{%- endif -%}
    {{ return(flags.FULL_REFRESH or build_scope_is_full()) }}
{%- endmacro %}
