{#- The per-person columns that sp_patient_outcomes and sp_matched_controls publish, in order. -#}
{% macro outcome_columns() -%}
    {%- set columns = ['index_date', 'age_at_index', 'age_band', 'sex', 'ethnicity', 'imd_quintile',
                       'rural_urban', 'region', 'source_system', 'pre_days', 'post_days',
                       'follow_up_end', 'complete_follow_up'] -%}
    {%- for window_name in ['pre', 'post'] -%}
        {%- for measure in ['consultations', 'ae_attendances', 'emergency_admissions'] -%}
            {%- do columns.append(window_name ~ '_' ~ measure) -%}
        {%- endfor -%}
        {%- for mode in ['face_to_face', 'telephone', 'video', 'home_visit', 'other'] -%}
            {%- do columns.append(window_name ~ '_consultations_' ~ mode) -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(columns) }}
{%- endmacro %}
