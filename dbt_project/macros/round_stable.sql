{#- round(expression, digits) with the same result on every engine, for a value that is a
    decimal tie. A weighted mean such as 45.9 / 16 = 2.86875 is summed in a different order
    by DuckDB and Spark and lands a unit in the last place either side of the tie; and their
    round() differ even on the same double (DuckDB rounds its binary value, Spark its shortest
    decimal form: 12.34565 gives 12.3456 and 12.3457). So: first to `digits` + 6 places,
    which puts both on the same double, then half away from zero, both steps in plain
    floating-point arithmetic, which both engines do alike. -#}
{% macro round_stable(expression, digits) -%}
    {%- set fine = 10 ** (digits + 6) -%}
    {%- set coarse = 10 ** digits -%}
    (sign({{ expression }}) * floor(floor(abs({{ expression }}) * {{ fine }}e0 + 0.5e0)
        / {{ fine }}e0 * {{ coarse }}e0 + 0.5e0) / {{ coarse }}e0)
{%- endmacro %}
