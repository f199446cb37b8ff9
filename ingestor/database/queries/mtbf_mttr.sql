-- MTBF and MTTR per equipment over a time window (ISO 14224).
--
-- Parameters:
--   $1  timestamptz  from: failures and production records starting in [from, to) count.
--   $2  timestamptz  to
--   $3  integer[]    the equipment to report (dim_equipment ids); NULL: every equipment.
-- Output, one row per equipment (also those without failures), ordered by MTBF (shortest first, unknown last),
-- then equipment code:
--   equipment_id, equipment_code, equipment_name,
--   failure_count         stops whose reason is_failure: downtime records, and a breakdown still in progress
--                         (the derivation's open stop, derive_stop)
--   operating_hours       sum of fact_production.operating_time in the window
--   total_downtime_hours  failure downtime in the window, a breakdown in progress up to now
--   mtbf_hours            operating_hours / failure_count (NULL without failures)
--   mttr_hours            mean time to restoration of the restored failures (NULL without one): a breakdown
--                         in progress is counted in failure_count, not in MTTR
--   open_failure_count    failures still in progress
--   open_failure_hours    their repair time so far
-- Hours are numeric and not rounded (round them for display).  The formula is reliability() (migration 0008,
-- replacing 0004's), the same as view_reliability_summary's.  A dashboard's "last 30 days" passes now() - 30 days and now().
SELECT r.equipment_id,
       r.equipment_code,
       r.equipment_name,
       r.failure_count,
       r.operating_hours,
       r.total_failure_hours AS total_downtime_hours,
       r.mtbf_hours,
       r.mttr_hours,
       r.open_failure_count,
       r.open_failure_hours
FROM reliability($1::timestamptz, $2::timestamptz) r
WHERE $3::integer[] IS NULL OR r.equipment_id = ANY ($3::integer[])
ORDER BY r.mtbf_hours ASC NULLS LAST, r.equipment_code;
