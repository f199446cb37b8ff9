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
-- Hours are numeric, rounded to 2 decimals.
WITH failures AS (
    SELECT d.equipment_id,
           count(*)                             AS failure_count,
           sum(d.downtime_duration) / 3600000.0 AS downtime_hours
    FROM fact_downtime d
    JOIN dim_downtime_reason dr ON dr.reason_id = d.reason_id
    WHERE dr.is_failure
      AND d.start_time >= $1::timestamptz - INTERVAL '30 days'
      AND d.start_time < $1::timestamptz
    GROUP BY d.equipment_id
),
runtime AS (
    SELECT p.equipment_id,
           sum(p.operating_time) / 3600000.0 AS operating_hours
    FROM fact_production p
    WHERE p.start_time >= $1::timestamptz - INTERVAL '30 days'
      AND p.start_time < $1::timestamptz
    GROUP BY p.equipment_id
)
SELECT e.equipment_code,
       COALESCE(f.failure_count, 0)                               AS failure_count,
       round(COALESCE(r.operating_hours, 0), 2)                   AS operating_hours,
       round(COALESCE(f.downtime_hours, 0), 2)                    AS total_downtime_hours,
       round(r.operating_hours / NULLIF(f.failure_count, 0), 2)   AS mtbf_hours,
       round(f.downtime_hours / NULLIF(f.failure_count, 0), 2)    AS mttr_hours
FROM dim_equipment e
LEFT JOIN failures f ON f.equipment_id = e.equipment_id
LEFT JOIN runtime r ON r.equipment_id = e.equipment_id
ORDER BY mtbf_hours ASC NULLS LAST, e.equipment_code;
