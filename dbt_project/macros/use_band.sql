{#- The band of a count among the `matching_bands` of a recent-use covariate: 0 below the
    first edge, 1 from the first edge to below the second, ..., len(edges) from the last edge
    up. Two patients match on the covariate when their bands are equal (docs/methods.md,
    decision 5). -#}
{% macro use_band(expression, covariate) -%}
    {%- set edges = var('matching_bands')[covariate] -%}
    case
        {%- for edge in edges %}
        when {{ expression }} < {{ edge }} then {{ loop.index0 }}
        {%- endfor %}
        else {{ edges | length }}
    end
{%- endmacro %}
