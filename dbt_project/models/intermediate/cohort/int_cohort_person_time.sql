-- Registered days in each window, and where follow-up ends.
-- pre_days: registered days in [index - n, index - 1] (a new registrant has fewer than n).
-- post_days: days from index + 1 until follow-up ends: the end of the registered span that
-- holds the index date (deregistration, death or extract date), index + n, or, for a control
-- referred later, the day before its own referral (censored_at_referral).

with cohort as (
    select * from {{ ref('int_cohort') }} where {{ in_build_scope() }}
),

spans as (
    select * from {{ ref('int_registered_spans') }} where {{ in_build_scope() }}
),

windows as (
    select
        *,
        {{ add_days('index_date', -var('window_days')) }} as pre_start,
        {{ add_days('index_date', -1) }} as pre_end,
        {{ add_days('index_date', var('window_days')) }} as post_end
    from cohort
),

pre as (
    select
        windows.cohort,
        windows.practice_id,
        windows.case_patient_id,
        windows.patient_id,
        -- no span in the window (registered on the index day itself): 0 days. The case
        -- matters: greatest() and least() skip NULLs on DuckDB, so without it the missing
        -- span's NULLs would count the whole window.
        coalesce(sum(
            case when spans.span_start is not null then
                {{ days_between('greatest(spans.span_start, windows.pre_start)',
                                'least(spans.span_end, windows.pre_end)') }} + 1
            end
        ), 0) as pre_days
    from windows
    left join spans
        on spans.practice_id = windows.practice_id
        and spans.patient_id = windows.patient_id
        and spans.span_start <= windows.pre_end
        and spans.span_end >= windows.pre_start
    group by windows.cohort, windows.practice_id, windows.case_patient_id, windows.patient_id
),

post as (
    select
        windows.*,
        case when spans.span_end is not null
            then least(spans.span_end, windows.post_end) end as registered_follow_up_end
    from windows
    left join spans
        on spans.practice_id = windows.practice_id
        and spans.patient_id = windows.patient_id
        and windows.index_date between spans.span_start and spans.span_end
),

censored as (
    select
        *,
        coalesce(own_referral_date <= registered_follow_up_end, false) as censored_at_referral,
        case
            when own_referral_date <= registered_follow_up_end
                then {{ add_days('own_referral_date', -1) }}
            else registered_follow_up_end
        end as follow_up_end
    from post
)

select
    post.cohort,
    post.practice_id,
    post.case_patient_id,
    post.patient_id,
    post.control_number,
    post.index_date,
    post.pre_start,
    post.pre_end,
    coalesce(post.follow_up_end, post.index_date) as follow_up_end,
    pre.pre_days,
    coalesce({{ days_between('post.index_date', 'post.follow_up_end') }}, 0) as post_days,
    coalesce({{ days_between('post.index_date', 'post.follow_up_end') }}, 0)
        = {{ var('window_days') }} as complete_follow_up,
    post.censored_at_referral
from censored as post
inner join pre
    on pre.cohort = post.cohort
    and pre.practice_id = post.practice_id
    and pre.case_patient_id = post.case_patient_id
    and pre.patient_id = post.patient_id
