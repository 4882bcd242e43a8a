{#- Generic test: in the window, each by-mode measure is the sum of its counts per mode. -#}
{% test modes_add_up(model, window_name) %}
    select * from {{ model }} where not ({{ modes_add_up(window_name) }})
{% endtest %}
