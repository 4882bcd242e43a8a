with source as (
    select * from {{ source('gp_extract', 'consultations') }}
),

renamed as (
    select
        -- ids
        consultation_id,
        practice_id,
        patient_id,
        -- dates
        consultation_date,
        -- attributes
        mode,
        staff_role,
        -- lineage
        _delivery_id as delivery_id
    from source
)

select * from renamed
