{#- The per-person columns that sp_patient_outcomes and sp_matched_controls publish, in order:
    characteristics at index, then each window's counts (macros/study.sql). -#}
{% macro outcome_columns() -%}
    {%- set columns = ['index_date', 'age_at_index', 'age_band', 'sex', 'ethnicity', 'imd_quintile',
                       'rural_urban', 'region', 'source_system', 'pre_days', 'post_days',
                       'follow_up_end', 'complete_follow_up'] -%}
    {%- for window_name in ['pre', 'post'] -%}
        {%- do columns.extend(window_count_columns(window_name)) -%}
    {%- endfor -%}
    {{ return(columns) }}
{%- endmacro %}
