-- Pareto of downtime reasons over the 30 days before a reference time: the reasons that make up the first
-- 80 % of the downtime that affects OEE, including the reason that crosses 80 %.
--
-- Parameters:
--   $1  timestamptz  as_of: downtime records starting in [as_of - 30 days, as_of) count.
-- Output, largest first (ties by reason_code):
--   reason_code, reason_description, reason_category, occurrence_count,
--   total_hours, avg_hours_per_equipment (hours / number of equipment with that reason), numeric, 2 decimals
--   percentage, cumulative_percentage (numeric, 1 decimal)
WITH downtime_summary AS (
    SELECT dr.reason_code,
           dr.reason_description,
           dr.reason_category,
           count(*)                                AS occurrence_count,
           sum(d.downtime_duration) / 3600000.0    AS total_hours,
           sum(d.downtime_duration) / 3600000.0 / count(DISTINCT d.equipment_id) AS avg_hours_per_equipment
    FROM fact_downtime d
    JOIN dim_downtime_reason dr ON dr.reason_id = d.reason_id
    WHERE d.start_time >= $1::timestamptz - INTERVAL '30 days'
      AND d.start_time < $1::timestamptz
      AND dr.affects_oee
    GROUP BY dr.reason_id, dr.reason_code, dr.reason_description, dr.reason_category
),
ranked_downtime AS (
    SELECT s.*,
           sum(s.total_hours) OVER (ORDER BY s.total_hours DESC, s.reason_code
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_hours,
           sum(s.total_hours) OVER ()                                                 AS grand_total_hours
    FROM downtime_summary s
)
SELECT reason_code,
       reason_description,
       reason_category,
       occurrence_count,
       round(total_hours, 2)                                              AS total_hours,
       round(avg_hours_per_equipment, 2)                                  AS avg_hours_per_equipment,
       round(100.0 * total_hours / NULLIF(grand_total_hours, 0), 1)      AS percentage,
       round(100.0 * cumulative_hours / NULLIF(grand_total_hours, 0), 1) AS cumulative_percentage
FROM ranked_downtime
WHERE cumulative_hours - total_hours < 0.8 * grand_total_hours  -- the share before this reason is under 80 %
ORDER BY ranked_downtime.total_hours DESC, reason_code;
