-- Parts produced over a time window, in total and per equipment, with the efficiency of production against
-- the ideal rate (GET /api/manufacturing-metrics/production, docs/api.md).
--
-- Parameters:
--   $1  timestamptz  from: production records starting in [from, to) count
--   $2  timestamptz  to
--   $3  integer[]    the equipment (dim_equipment ids); NULL: every equipment
--   $4  integer[]    the shifts (dim_shift ids); NULL: every shift
-- efficiency = the ideal time of the parts produced (parts × ideal cycle time, as production_ideal_time of
-- migration 0004 and production_sums() of 0006 compute it) / the planned production time: what was made against what the planned time allows at the
-- ideal rate.  It equals availability × performance before performance is capped, so it exceeds 1 only when
-- parts were made faster than their ideal cycle time.  NULL when the planned time is 0 or an ideal cycle time
-- is missing for a record that made parts.
-- Output: first the summary row (equipment_id NULL; also when no record matched, with zero parts), then one
-- row per equipment with a record in the window, by equipment code:
--   equipment_id, equipment_code, equipment_name, total_parts, good_parts, scrap_parts (bigint),
--   planned_hours (numeric), efficiency (double precision)
SELECT e.equipment_id,
       e.equipment_code,
       e.equipment_name,
       COALESCE(sum(p.total_parts_produced), 0)::bigint AS total_parts,
       COALESCE(sum(p.good_parts), 0)::bigint           AS good_parts,
       COALESCE(sum(p.scrap_parts), 0)::bigint          AS scrap_parts,
       COALESCE(sum(p.planned_production_time), 0) / 3600000.0 AS planned_hours,
       CASE WHEN bool_and(p.ideal_known) THEN
           COALESCE(sum(p.theoretical_time), 0)::double precision / NULLIF(sum(p.planned_production_time), 0)
       END AS efficiency
FROM production_sums($1::timestamptz, $1::timestamptz, $2::timestamptz, $3::integer[], $4::integer[]) p
JOIN dim_equipment e ON e.equipment_id = p.equipment_id
GROUP BY GROUPING SETS ((), (e.equipment_id, e.equipment_code, e.equipment_name))
ORDER BY e.equipment_code NULLS FIRST;
