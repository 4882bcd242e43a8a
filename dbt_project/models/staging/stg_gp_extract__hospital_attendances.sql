with source as (
    select * from {{ source('gp_extract', 'hospital_attendances') }}
),

renamed as (
    select
        -- ids
        attendance_id,
        practice_id,
        patient_id,
        -- dates
        attendance_date,
        -- attributes
        setting,
        -- lineage
        _delivery_id as delivery_id
    from source
)

select * from renamed
