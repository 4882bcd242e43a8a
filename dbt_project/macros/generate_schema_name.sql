{#- Use each layer's schema name as it is (staging, intermediate, marts), not target_schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
