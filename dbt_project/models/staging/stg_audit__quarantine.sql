with source as (
    select * from {{ source('audit', 'quarantine') }}
),

renamed as (
    select
        -- ids
        delivery_id,
        table_name,
        practice_id,
        row_number,
        -- why
        rule,
        row_json
    from source
)

select * from renamed
