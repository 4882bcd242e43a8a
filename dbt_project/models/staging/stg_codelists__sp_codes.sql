with source as (
    select * from {{ source('codelists', 'sp_codes') }}
),

renamed as (
    select
        -- list
        codelist,
        version as codelist_version,
        -- codes
        code as snomed_code,
        term,
        category
    from source
    where codelist = '{{ var("sp_codelist") }}'
)

select * from renamed
