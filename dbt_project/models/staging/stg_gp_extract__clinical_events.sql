with source as (
    select * from {{ source('gp_extract', 'clinical_events') }}
),

renamed as (
    select
        -- ids
        event_id,
        practice_id,
        patient_id,
        consultation_id,
        -- dates
        event_date,
        -- codes and values
        snomed_code,
        numeric_value,
        -- lineage
        _delivery_id as delivery_id
    from source
)

select * from renamed
