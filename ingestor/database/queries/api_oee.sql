-- OEE per equipment over a time window, per period of the window, and against the window just before it
-- (GET /api/manufacturing-metrics/oee, docs/api.md).
--
-- Parameters:
--   $1  timestamptz  from: production records starting in [from, to) count
--   $2  timestamptz  to
--   $3  integer[]    the equipment (dim_equipment ids); NULL: every equipment
--   $4  integer[]    the shifts (dim_shift ids); NULL: every shift
--   $5  text         the periods: 'day' (production day, date_id), 'week' (ISO week of the production day),
--                    'shift' (production day and shift)
-- The records come as sums from production_sums() (migration 0006: the per-shift rollup, and the records of
-- the shifts the window's edges cut).
-- Every ratio is oee_ratios() (migration 0004) over the sums of a set of records, never an average of ratios:
-- the same formula as view_oee_daily and oee_7day.sql, only grouped differently.
-- Output, by equipment code; for each equipment first its 'window' row, then its 'period' rows in time order:
--   kind  'window' or 'period'
--   equipment_id, equipment_code, equipment_name
--   period_date  'period': the production day; for 'week' the Monday of its ISO week.  NULL for 'window'
--   iso_week     'period' of 'week': e.g. 2025-W24.  NULL otherwise
--   shift_code, shift_name  'period' of 'shift'.  NULL otherwise
--   availability, performance, quality, oee  ratios 0..1, NULL when unknown
--   trend_change     'window': oee minus the OEE of [from - (to - from), from) of the same equipment and
--                    shifts; NULL when either is unknown (or the earlier window has no record)
--   trend_direction  'window': 'up' or 'down' when |trend_change| >= 0.01 (one OEE point), else 'stable'
-- Only equipment with a record in [from, to) is listed.
WITH records AS (
    SELECT p.equipment_id,
           p.shift_id,
           p.in_second                                                               AS in_window,
           make_date(p.date_id / 10000, p.date_id / 100 % 100, p.date_id % 100)      AS production_date,
           p.operating_time,
           p.planned_production_time,
           p.theoretical_time,
           p.ideal_known,
           p.good_parts,
           p.total_parts_produced
    FROM production_sums($1::timestamptz - ($2::timestamptz - $1::timestamptz), $1::timestamptz, $2::timestamptz,
                         $3::integer[], $4::integer[]) p
),
windows AS (
    SELECT r.equipment_id, r.in_window, o.*
    FROM (SELECT equipment_id, in_window,
                 sum(operating_time) AS operating_time, sum(planned_production_time) AS planned_time,
                 sum(theoretical_time) AS theoretical_time, bool_and(ideal_known) AS ideal_known,
                 sum(good_parts) AS good_parts, sum(total_parts_produced) AS total_parts
          FROM records
          GROUP BY equipment_id, in_window) r
    CROSS JOIN LATERAL oee_ratios(r.operating_time, r.planned_time, r.theoretical_time, r.ideal_known,
                                  r.good_parts, r.total_parts) o
),
periods AS (
    SELECT r.equipment_id, r.period_date, r.shift_id, o.*
    FROM (SELECT equipment_id,
                 CASE WHEN $5::text = 'week' THEN date_trunc('week', production_date)::date
                      ELSE production_date END                               AS period_date,
                 CASE WHEN $5::text = 'shift' THEN shift_id END               AS shift_id,
                 sum(operating_time) AS operating_time, sum(planned_production_time) AS planned_time,
                 sum(theoretical_time) AS theoretical_time, bool_and(ideal_known) AS ideal_known,
                 sum(good_parts) AS good_parts, sum(total_parts_produced) AS total_parts
          FROM records
          WHERE in_window
          GROUP BY 1, 2, 3) r
    CROSS JOIN LATERAL oee_ratios(r.operating_time, r.planned_time, r.theoretical_time, r.ideal_known,
                                  r.good_parts, r.total_parts) o
),
trend AS (
    SELECT cur.equipment_id, cur.availability, cur.performance, cur.quality, cur.oee,
           cur.oee - prev.oee AS change
    FROM windows cur
    LEFT JOIN windows prev ON prev.equipment_id = cur.equipment_id AND NOT prev.in_window
    WHERE cur.in_window
)
SELECT kind, equipment_id, equipment_code, equipment_name, period_date, iso_week, shift_code, shift_name,
       availability, performance, quality, oee, trend_change, trend_direction
FROM (
SELECT 'window' AS kind, e.equipment_id, e.equipment_code, e.equipment_name,
       NULL::date AS period_date, NULL::text AS iso_week, NULL::varchar AS shift_code, NULL::varchar AS shift_name,
       t.availability, t.performance, t.quality, t.oee,
       t.change AS trend_change,
       CASE WHEN t.change IS NULL OR abs(t.change) < 0.01 THEN 'stable'
            WHEN t.change > 0 THEN 'up'
            ELSE 'down' END AS trend_direction,
       0 AS sort_kind, NULL::time AS sort_shift
FROM trend t
JOIN dim_equipment e ON e.equipment_id = t.equipment_id
UNION ALL
SELECT 'period', e.equipment_id, e.equipment_code, e.equipment_name,
       p.period_date,
       CASE WHEN $5::text = 'week' THEN to_char(p.period_date, 'IYYY-"W"IW') END,
       sh.shift_code, sh.shift_name,
       p.availability, p.performance, p.quality, p.oee,
       NULL, NULL,
       1, sh.start_time
FROM periods p
JOIN dim_equipment e ON e.equipment_id = p.equipment_id
LEFT JOIN dim_shift sh ON sh.shift_id = p.shift_id
) rows
ORDER BY equipment_code, sort_kind, period_date, sort_shift, shift_code;
