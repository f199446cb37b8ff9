-- OEE of the shift running now, per equipment, from view_oee_daily (refreshed by the daemon every few
-- minutes, and right after a derivation run that changed facts).
--
-- Parameters:
--   $1  timestamptz  now: the instant whose shift is shown.
--   $2  integer[]    the equipment to show (dim_equipment ids); NULL: every equipment.
--   $3  integer[]    the shifts to show (dim_shift ids); NULL: whichever is running.
-- For each site the current shift is found in the site's own time zone; a shift whose end_time is at or before
-- its start_time runs past midnight, and its production day (date_id) is the local date on which it started.
-- Output, lowest OEE first (unknown last), then equipment code:
--   site_code, shift_id, shift_code, shift_name, date_id, equipment_id, equipment_code, equipment_name,
--   availability, performance, quality, oee   ratios 0..1 (double precision, not rounded; NULL when unknown)
--   last_update  latest end_time of the shift's production records of that equipment
WITH site_clock AS (
    SELECT s.site_id, s.site_code, ($1::timestamptz AT TIME ZONE s.timezone) AS local_now
    FROM dim_site s
),
current_shift AS (
    SELECT sh.shift_id,
           sh.shift_code,
           sh.shift_name,
           c.site_id,
           c.site_code,
           to_char(CASE WHEN sh.end_time <= sh.start_time AND c.local_now::time < sh.end_time
                        THEN c.local_now::date - 1
                        ELSE c.local_now::date
                   END, 'YYYYMMDD')::integer AS date_id
    FROM dim_shift sh
    JOIN site_clock c ON c.site_id = sh.site_id
    WHERE sh.is_active
      AND ($3::integer[] IS NULL OR sh.shift_id = ANY ($3::integer[]))
      AND CASE WHEN sh.start_time < sh.end_time
               THEN c.local_now::time >= sh.start_time AND c.local_now::time < sh.end_time
               ELSE c.local_now::time >= sh.start_time OR c.local_now::time < sh.end_time
          END
),
live_oee AS (
    SELECT cs.site_code,
           cs.shift_id,
           cs.shift_code,
           cs.shift_name,
           cs.date_id,
           e.equipment_id,
           e.equipment_code,
           e.equipment_name,
           v.availability,
           v.performance,
           v.quality,
           v.oee,
           (SELECT max(p.end_time) FROM fact_production p
            WHERE p.equipment_id = v.equipment_id AND p.shift_id = v.shift_id AND p.date_id = v.date_id)
               AS last_update
    FROM current_shift cs
    JOIN view_oee_daily v ON v.shift_id = cs.shift_id AND v.date_id = cs.date_id
    JOIN dim_equipment e ON e.equipment_id = v.equipment_id
    WHERE $2::integer[] IS NULL OR v.equipment_id = ANY ($2::integer[])
)
SELECT site_code, shift_id, shift_code, shift_name, date_id, equipment_id, equipment_code, equipment_name,
       availability, performance, quality, oee, last_update
FROM live_oee
ORDER BY live_oee.oee ASC NULLS LAST, equipment_code;
