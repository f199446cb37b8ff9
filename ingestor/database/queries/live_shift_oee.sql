-- OEE of the shift running now, per equipment, from view_oee_daily (refreshed by the daemon every few
-- minutes).
--
-- Parameters:
--   $1  timestamptz  now: the instant whose shift is shown.
-- For each site the current shift is found in the site's own time zone; a shift whose end_time is at or before
-- its start_time runs past midnight, and its production day (date_id) is the local date on which it started.
-- Output, lowest OEE first (unknown last), then equipment code:
--   site_code, shift_code, shift_name, date_id, equipment_code, equipment_name,
--   availability, performance, quality, oee   (percent, numeric, 1 decimal)
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
      AND CASE WHEN sh.start_time < sh.end_time
               THEN c.local_now::time >= sh.start_time AND c.local_now::time < sh.end_time
               ELSE c.local_now::time >= sh.start_time OR c.local_now::time < sh.end_time
          END
),
live_oee AS (
    SELECT cs.site_code,
           cs.shift_code,
           cs.shift_name,
           cs.date_id,
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
)
SELECT site_code,
       shift_code,
       shift_name,
       date_id,
       equipment_code,
       equipment_name,
       round((availability * 100)::numeric, 1) AS availability,
       round((performance * 100)::numeric, 1)  AS performance,
       round((quality * 100)::numeric, 1)      AS quality,
       round((oee * 100)::numeric, 1)          AS oee,
       last_update
FROM live_oee
ORDER BY live_oee.oee ASC NULLS LAST, equipment_code;
