with source as (
    select * from {{ source('audit', 'deliveries') }}
),

renamed as (
    select
        -- ids
        delivery_id,
        manifest_sha256,
        -- delivery
        extracted_at,
        kind,
        source_system,
        -- outcome
        status,
        reason,
        applied_at
    from source
)

select * from renamed
