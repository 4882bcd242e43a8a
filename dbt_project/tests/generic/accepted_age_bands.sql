{#- Generic test: the column holds only the labels of the declared age bands (var age_bands). -#}
{% test accepted_age_bands(model, column_name) %}
    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} not in ('{{ age_band_labels() | join("', '") }}')
{% endtest %}
