-- Maintenance work and cost per equipment over the 90 days before a reference time.
--
-- Parameters:
--   $1  timestamptz  as_of: maintenance records starting in [as_of - 90 days, as_of) count.
-- Output, one row per equipment with maintenance in the window, most material cost first (unknown cost last):
--   equipment_code, equipment_name, maintenance_count, total_labor_hours, total_material_cost (NULL when no
--   record of the equipment has a cost), avg_duration_hours (end - start, numeric rounded to 2 decimals).
SELECT e.equipment_code,
       e.equipment_name,
       count(m.maintenance_id) AS maintenance_count,
       sum(m.labor_hours)      AS total_labor_hours,
       sum(m.material_cost)    AS total_material_cost,
       round(avg(extract(epoch FROM m.end_time - m.start_time) / 3600.0), 2) AS avg_duration_hours
FROM dim_equipment e
JOIN fact_maintenance m ON m.equipment_id = e.equipment_id
WHERE m.start_time >= $1::timestamptz - INTERVAL '90 days'
  AND m.start_time < $1::timestamptz
GROUP BY e.equipment_id, e.equipment_code, e.equipment_name
ORDER BY total_material_cost DESC NULLS LAST, e.equipment_code;
