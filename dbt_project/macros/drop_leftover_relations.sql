{% macro drop_leftover_relations() %}
    {{ return(adapter.dispatch('drop_leftover_relations', 'sprx')()) }}
{% endmacro %}

{% macro default__drop_leftover_relations() %}
  {#- Drop the intermediate relations dbt leaves behind: dbt-duckdb keeps the temporary table
      of a Python incremental model (`int_matched_controls__dbt_tmp<time>`) as a real table
      in the target schema after every incremental build, and a dbt killed part-way can leave
      `__dbt_tmp` or `__dbt_backup` relations in a model's schema. Run at the end of every dbt
      invocation (`on-run-end`), when no model is being built; portable: dbt's own macros. -#}
  {%- if execute -%}
    {%- set schemas = [target.schema] -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' -%}
      {%- if node.schema not in schemas -%}{%- do schemas.append(node.schema) -%}{%- endif -%}
    {%- endfor -%}
    {%- for schema in schemas -%}
      {%- set found = list_relations_without_caching(
            api.Relation.create(database=target.get('database'), schema=schema)) -%}
      {%- for row in found if '__dbt_tmp' in row['name'] or '__dbt_backup' in row['name'] -%}
        {%- set relation = api.Relation.create(database=row['database'], schema=row['schema'],
                                               identifier=row['name'], type=row['type']) -%}
        {%- do log('dropping leftover ' ~ relation, info=false) -%}
        {%- do adapter.drop_relation(relation) -%}
      {%- endfor -%}
    {%- endfor -%}
    {#- listing began a transaction on the hook's connection; without this the drops roll back -#}
    {%- do adapter.commit() -%}
  {%- endif -%}
{% endmacro %}

{#- Spark builds are full builds of tables and views (`create table`, `create or replace
    view`, the Python model's saveAsTable): no `__dbt_tmp` or `__dbt_backup` relation is left,
    and listing a schema not yet created fails there. -#}
{% macro spark__drop_leftover_relations() %}{% endmacro %}
