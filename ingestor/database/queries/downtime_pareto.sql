-- Pareto of the downtime that affects OEE, by reason, over a time window: every reason with its share of the
-- window's downtime and the running share, largest first, and whether it is in the head: the reasons that
-- make up the first 80 %, including the reason that crosses 80 % (the "vital few").
--
-- Parameters:
--   $1  timestamptz  from: downtime records starting in [from, to) count.
--   $2  timestamptz  to
--   $3  integer[]    the equipment whose downtime counts (dim_equipment ids); NULL: every equipment.
--   $4  integer[]    the shifts (dim_shift ids); NULL: every shift.  A downtime record's shift is that of the
--                    production record covering its start (production_id); one without is left out when
--                    shifts are given.
-- Output, largest first (ties by reason_code):
--   reason_code, reason_description, reason_category, occurrence_count,
--   total_hours, avg_hours_per_equipment (hours / number of equipment with that reason),
--   share, cumulative_share  of the window's total downtime hours, 0..1
--   in_head  the share before this reason is under 80 %
-- Numbers are numeric and not rounded (round them for display).  A dashboard's "last 30 days" passes
-- now() - 30 days and now().
WITH downtime_summary AS (
    SELECT dr.reason_code,
           dr.reason_description,
           dr.reason_category,
           count(*)                                AS occurrence_count,
           sum(d.downtime_duration) / 3600000.0    AS total_hours,
           sum(d.downtime_duration) / 3600000.0 / count(DISTINCT d.equipment_id) AS avg_hours_per_equipment
    FROM fact_downtime d
    JOIN dim_downtime_reason dr ON dr.reason_id = d.reason_id
    WHERE d.start_time >= $1::timestamptz
      AND d.start_time < $2::timestamptz
      AND dr.affects_oee
      AND ($3::integer[] IS NULL OR d.equipment_id = ANY ($3::integer[]))
      AND ($4::integer[] IS NULL OR EXISTS (
              SELECT 1 FROM fact_production p
              WHERE p.production_id = d.production_id AND p.shift_id = ANY ($4::integer[])))
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
       total_hours,
       avg_hours_per_equipment,
       total_hours / NULLIF(grand_total_hours, 0)                    AS share,
       cumulative_hours / NULLIF(grand_total_hours, 0)               AS cumulative_share,
       cumulative_hours - total_hours < 0.8 * grand_total_hours       AS in_head
FROM ranked_downtime
ORDER BY ranked_downtime.total_hours DESC, reason_code;
