with source as (
    select * from {{ source('gp_extract', 'practices') }}
),

renamed as (
    select
        -- ids
        practice_id,
        -- attributes
        region,
        -- lineage
        _delivery_id as delivery_id
    from source
)

select * from renamed
