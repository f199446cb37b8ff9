-- OEE per equipment, production day and shift over the 7 days before a reference time (ISO 22400).
--
-- Parameters:
--   $1  timestamptz  as_of: production records starting in [as_of - 7 days, as_of) are counted.
-- Output, one row per (equipment, date_id, shift), ordered by equipment code, date_id, shift_id:
--   equipment_code, equipment_id, date_id (site-local production day, yyyymmdd), shift_id,
--   availability_pct  operating time / planned production time, capped at 100
--   performance_pct   parts × ideal cycle time / operating time, capped at 100; the ideal cycle time is the
--                     product's target_cycle_time, else 3600000 / the equipment's theoretical_rate (ms);
--                     NULL when neither is known for a record that produced parts
--   quality_pct       good parts / total parts
--   oee_pct           availability × performance × quality (0 when nothing ran)
-- All percentages are numeric, rounded to 2 decimals.
WITH oee_components AS (
    SELECT p.equipment_id,
           p.date_id,
           p.shift_id,
           sum(p.operating_time)::double precision / NULLIF(sum(p.planned_production_time), 0) AS availability,
           CASE WHEN bool_and(ideal.cycle_ms IS NOT NULL OR p.total_parts_produced = 0) THEN
               sum(p.total_parts_produced * ideal.cycle_ms)::double precision / NULLIF(sum(p.operating_time), 0)
           END AS performance,
           sum(p.good_parts)::double precision / NULLIF(sum(p.total_parts_produced), 0) AS quality
    FROM fact_production p
    JOIN dim_equipment e ON e.equipment_id = p.equipment_id
    LEFT JOIN dim_product pr ON pr.product_id = p.product_id
    CROSS JOIN LATERAL (
        SELECT COALESCE(pr.target_cycle_time::numeric, 3600000.0 / NULLIF(e.theoretical_rate, 0)) AS cycle_ms
    ) ideal
    WHERE p.start_time >= $1::timestamptz - INTERVAL '7 days'
      AND p.start_time < $1::timestamptz
    GROUP BY p.equipment_id, p.date_id, p.shift_id
),
capped AS (
    -- CASE rather than LEAST(x, 1.0): LEAST ignores NULL, so an unknown ratio would become 100 %.
    SELECT equipment_id, date_id, shift_id,
           CASE WHEN availability > 1 THEN 1.0 ELSE availability END AS availability,
           CASE WHEN performance > 1 THEN 1.0 ELSE performance END   AS performance,
           quality
    FROM oee_components
)
SELECT e.equipment_code,
       c.equipment_id,
       c.date_id,
       c.shift_id,
       round((c.availability * 100)::numeric, 2) AS availability_pct,
       round((c.performance * 100)::numeric, 2)  AS performance_pct,
       round((c.quality * 100)::numeric, 2)      AS quality_pct,
       round((CASE WHEN c.availability = 0 THEN 0.0
                   ELSE c.availability * c.performance * c.quality END * 100)::numeric, 2) AS oee_pct
FROM capped c
JOIN dim_equipment e ON e.equipment_id = c.equipment_id
ORDER BY e.equipment_code, c.date_id, c.shift_id;
