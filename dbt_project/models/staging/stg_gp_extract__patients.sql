with source as (
    select * from {{ source('gp_extract', 'patients') }}
),

renamed as (
    select
        -- ids
        practice_id,
        patient_id,
        -- demographics
        year_of_birth,
        sex,
        ethnicity,
        imd_quintile,
        rural_urban,
        -- dates
        date_of_death,
        -- lineage
        _delivery_id as delivery_id
    from source
)

select * from renamed
