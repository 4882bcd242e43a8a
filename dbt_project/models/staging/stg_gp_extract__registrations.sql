with source as (
    select * from {{ source('gp_extract', 'registrations') }}
),

renamed as (
    select
        -- ids
        registration_id,
        practice_id,
        patient_id,
        -- dates
        start_date,
        end_date,
        -- lineage
        _delivery_id as delivery_id
    from source
)

select * from renamed
