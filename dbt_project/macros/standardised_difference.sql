{#- The standardised mean difference of two groups of a balance table, from the columns
    <group>_value (a mean or a share) and <group>_variance of `relation`:
    (x_1 - x_0) / sqrt((s_1^2 + s_0^2) / 2); 0 when the values are equal, empty when a group
    is empty or both variances are 0 with different values. -#}
{% macro standardised_difference(relation, first, second) -%}
    case
        when {{ relation }}.{{ first }}_value is null or {{ relation }}.{{ second }}_value is null then null
        when {{ relation }}.{{ first }}_value = {{ relation }}.{{ second }}_value then 0.0
        when {{ relation }}.{{ first }}_variance + {{ relation }}.{{ second }}_variance > 0 then
            ({{ relation }}.{{ first }}_value - {{ relation }}.{{ second }}_value)
            / sqrt(({{ relation }}.{{ first }}_variance + {{ relation }}.{{ second }}_variance) / 2)
    end
{%- endmacro %}
