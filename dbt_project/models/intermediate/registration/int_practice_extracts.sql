-- One row per contributing practice: its region, the source system and the extract date of
-- its latest applied delivery. Nobody counts as registered after their practice's extract date.

with deliveries as (
    select * from {{ ref('stg_audit__deliveries') }}
),

delivery_practices as (
    select * from {{ ref('stg_audit__delivery_practices') }}
),

practices as (
    select * from {{ ref('stg_gp_extract__practices') }}
),

applied_practice_deliveries as (
    select
        delivery_practices.practice_id,
        deliveries.delivery_id,
        deliveries.extracted_at,
        deliveries.source_system,
        row_number() over (
            partition by delivery_practices.practice_id
            order by deliveries.extracted_at desc, deliveries.delivery_id desc
        ) as recency
    from delivery_practices
    inner join deliveries
        on deliveries.delivery_id = delivery_practices.delivery_id
    where deliveries.status = 'applied'
),

latest as (
    select * from applied_practice_deliveries where recency = 1
)

select
    latest.practice_id,
    practices.region,
    latest.source_system,
    latest.extracted_at,
    latest.delivery_id as latest_delivery_id
from latest
left join practices
    on practices.practice_id = latest.practice_id
