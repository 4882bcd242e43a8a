{#- A bound of the 95% confidence interval of a ratio estimated on the log scale:
    estimate * exp(-+1.959964 * se(log estimate)). side is 'lower' or 'upper'. -#}
{% macro ci_bound(estimate, log_se, side) -%}
    {{ estimate }} * exp({{ '-' if side == 'lower' else '' }}1.959963985 * {{ log_se }})
{%- endmacro %}
