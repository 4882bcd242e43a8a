-- The practices the current build rebuilds, as the var sprx_build passes them
-- (macros/build_scope.sql): on a full rebuild (or dbt run without the var) every practice
-- with an applied delivery; on an incremental build those it lists, the practices with
-- deliveries applied since the last successful build.

with deliveries as (
    select * from {{ ref('stg_audit__deliveries') }}
),

delivery_practices as (
    select * from {{ ref('stg_audit__delivery_practices') }}
)

select distinct delivery_practices.practice_id
from delivery_practices
inner join deliveries
    on delivery_practices.delivery_id = deliveries.delivery_id
where
    deliveries.status = 'applied'
    {% if not build_scope_is_full() -%}
        and delivery_practices.practice_id in ({{ build_scope_practice_list() }})
    {%- endif %}
