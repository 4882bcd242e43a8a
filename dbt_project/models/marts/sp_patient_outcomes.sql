with cohort_outcomes as (
    select * from {{ ref('int_cohort_outcomes') }} where {{ in_build_scope() }}
)

select
    patient_id,
    practice_id,
    {{ outcome_columns() | join(',\n    ') }}
from cohort_outcomes
where cohort = 'referred'
