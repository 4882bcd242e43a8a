with cohort_outcomes as (
    select * from {{ ref('int_cohort_outcomes') }} where {{ in_build_scope() }}
)

select
    practice_id,
    case_patient_id,
    patient_id as control_patient_id,
    control_number,
    censored_at_referral,
    {{ outcome_columns() | join(',\n    ') }}
from cohort_outcomes
where cohort = 'control'
