with source as (
    select * from {{ source('audit', 'delivery_practices') }}
),

renamed as (
    select
        delivery_id,
        practice_id
    from source
)

select * from renamed
