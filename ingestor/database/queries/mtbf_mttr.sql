-- MTBF and MTTR per equipment over the 30 days before a reference time (ISO 14224).
--
-- Parameters:
--   $1  timestamptz  as_of: failures and production records starting in [as_of - 30 days, as_of) count.
-- Output, one row per equipment (also those without failures), ordered by MTBF (shortest first, unknown last):
--   equipment_code, failure_count (downtime records whose reason is_failure),
--   operating_hours       sum of fact_production.operating_time in the window
--   total_downtime_hours  failure downtime in the window
--   mtbf_hours            operating_hours / failure_count (NULL without failures)
--   mttr_hours            total_downtime_hours / failure_count (NULL without failures)
-- Hours are numeric, rounded to 2 decimals.  The formula is reliability() (migration 0004), the same as
-- view_reliability_summary's.
SELECT r.equipment_code,
       r.failure_count,
       round(r.operating_hours, 2)     AS operating_hours,
       round(r.total_failure_hours, 2) AS total_downtime_hours,
       round(r.mtbf_hours, 2)          AS mtbf_hours,
       round(r.mttr_hours, 2)          AS mttr_hours
FROM reliability($1::timestamptz - INTERVAL '30 days', $1::timestamptz) r
ORDER BY r.mtbf_hours ASC NULLS LAST, r.equipment_code;
