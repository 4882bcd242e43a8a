{#- One row per month (first day, a DATE) from the month of start_date to that of end_date. -#}
{% macro month_spine(start_date, end_date) -%}
    {{ return(adapter.dispatch('month_spine', 'sprx')(start_date, end_date)) }}
{%- endmacro %}

{% macro duckdb__month_spine(start_date, end_date) -%}
    select cast(month_start as date) as month
    from generate_series(
        cast(date_trunc('month', {{ start_date }}) as date),
        cast(date_trunc('month', {{ end_date }}) as date),
        interval 1 month
    ) as spine(month_start)
{%- endmacro %}

{% macro default__month_spine(start_date, end_date) -%}
    with recursive spine (month) as (
        select cast({{ dbt.date_trunc('month', start_date) }} as date)
        union all
        select cast({{ dbt.dateadd('month', 1, 'month') }} as date) from spine
        where month < cast({{ dbt.date_trunc('month', end_date) }} as date)
    )
    select month from spine
{%- endmacro %}

{#- Spark and Databricks: a recursive CTE fails on Spark 3.5 and 4.0 (and is slow on 4.3);
    sequence() gives the months at once. -#}
{% macro spark__month_spine(start_date, end_date) -%}
    select month
    from (
        select explode(sequence(
            cast({{ dbt.date_trunc('month', start_date) }} as date),
            cast({{ dbt.date_trunc('month', end_date) }} as date),
            interval 1 month
        )) as month
    ) as spine
{%- endmacro %}
