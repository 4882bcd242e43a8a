-- The uptake measures' population summed per practice, interval and breakdown cell: how many
-- patients were registered, how many were referred, and their referral and declined codes.
-- Every count adds up across cells (a patient is in one cell per interval), so sp_measures
-- sums these rather than the 46 million patient intervals of 1,000,000 patients, and an
-- incremental build recounts only the practices it rebuilds (3.2 million cells at that size).

with patient_intervals as (
    select * from {{ ref('int_measure_patient_intervals') }} where {{ in_build_scope() }}
)

select
    period,
    interval_start,
    interval_end,
    practice_id,
    age_band,
    sex,
    ethnicity,
    imd_quintile,
    region,
    rural_urban,
    source_system,
    homeless,
    count(*) as registered,
    sum(referred) as referred,
    sum(referral_codes) as referral_codes,
    sum(declined_codes) as declined_codes
from patient_intervals
group by
    period, interval_start, interval_end, practice_id, age_band, sex, ethnicity,
    imd_quintile, region, rural_urban, source_system, homeless
