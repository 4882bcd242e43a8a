{#- The declared age bands (var age_bands, the lower edge of each): "<edge>-<next edge - 1>",
    and "<last edge>+" (0-17, 18-29, ..., 70-79, 80+). An age below the second edge is in
    the first band. -#}
{% macro age_band(age) -%}
    {%- set edges = var('age_bands') -%}
    case
        {%- for edge in edges[1:] %}
        when {{ age }} < {{ edge }} then '{{ edges[loop.index0] }}-{{ edge - 1 }}'
        {%- endfor %}
        else '{{ edges[-1] }}+'
    end
{%- endmacro %}
