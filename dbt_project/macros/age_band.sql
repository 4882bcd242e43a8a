{#- The age bands of methods.md: 0-17, 18-29, 30-39, ..., 70-79, 80+. -#}
{% macro age_band(age) -%}
    case
        when {{ age }} < 18 then '0-17'
        when {{ age }} < 30 then '18-29'
        when {{ age }} < 40 then '30-39'
        when {{ age }} < 50 then '40-49'
        when {{ age }} < 60 then '50-59'
        when {{ age }} < 70 then '60-69'
        when {{ age }} < 80 then '70-79'
        else '80+'
    end
{%- endmacro %}
