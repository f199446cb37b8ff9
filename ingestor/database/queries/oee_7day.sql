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
-- All percentages are numeric, rounded to 2 decimals.  The formula is oee_by_shift() / oee_ratios()
-- (migration 0004), the same as view_oee_daily's.
SELECT e.equipment_code,
       o.equipment_id,
       o.date_id,
       o.shift_id,
       round((o.availability * 100)::numeric, 2) AS availability_pct,
       round((o.performance * 100)::numeric, 2)  AS performance_pct,
       round((o.quality * 100)::numeric, 2)      AS quality_pct,
       round((o.oee * 100)::numeric, 2)          AS oee_pct
FROM oee_by_shift($1::timestamptz - INTERVAL '7 days', $1::timestamptz) o
JOIN dim_equipment e ON e.equipment_id = o.equipment_id
ORDER BY e.equipment_code, o.date_id, o.shift_id;
