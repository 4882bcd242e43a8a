with source as (
    select * from {{ source('audit', 'delivery_practice_tables') }}
),

renamed as (
    select
        -- ids
        delivery_id,
        practice_id,
        table_name,
        -- row accounting: received = loaded + quarantined
        received,
        loaded,
        quarantined
    from source
)

select * from renamed
