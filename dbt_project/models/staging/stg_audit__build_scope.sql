-- The practices the current build rebuilds (the latest row of audit.build_scopes): those with
-- deliveries applied since the last successful build, or every practice on a full rebuild.

with build_scopes as (
    select * from {{ source('audit', 'build_scopes') }}
),

build_practices as (
    select * from {{ source('audit', 'build_practices') }}
)

{{ build_scope_practices('build_scopes', 'build_practices') }}
