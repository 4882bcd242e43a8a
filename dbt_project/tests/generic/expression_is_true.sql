{#- Generic test: every row satisfies a SQL condition (rows returned are failures). -#}
{% test expression_is_true(model, expression) %}
    select * from {{ model }} where not ({{ expression }})
{% endtest %}
