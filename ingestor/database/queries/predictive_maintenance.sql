-- Equipment whose vibration or temperature is high or trending towards a limit, from the 5-minute sensor
-- statistics of the 24 hours before a reference time.
--
-- Parameters:
--   $1  timestamptz  now: buckets starting in [now - 24 hours, now) are used.
-- Thresholds: vibration WARNING above 3.5, CRITICAL above 4.5, limit 5.0; temperature WARNING above 75,
-- CRITICAL above 85, limit 90 (in the units the tags report).
-- Output, CRITICAL before WARNING, then soonest to the limit (unknown last), then equipment and parameter:
--   equipment_code, equipment_name, parameter,
--   current_value      sample-weighted mean of the window, numeric, 2 decimals
--   alert_level        'CRITICAL' or 'WARNING' (NORMAL rows are left out)
--   days_to_threshold  at the least-squares trend of the bucket means, days until the limit, numeric with 1
--                      decimal, 0 when already past it; NULL when the trend is flat or falling
-- Reads sensor_5min_avg: where that is a materialized view (PostgreSQL, TimescaleDB Apache edition) it must
-- have been refreshed and covers the last 24 hours before its refresh.
WITH sensor_trends AS (
    SELECT s.equipment_id,
           s.parameter,
           sum(s.avg_value * s.sample_count) / NULLIF(sum(s.sample_count), 0) AS current_avg,
           stddev(s.avg_value)                                            AS current_stddev,
           regr_slope(s.avg_value, extract(epoch FROM s.bucket))          AS trend_slope  -- per second
    FROM sensor_5min_avg s
    WHERE s.bucket >= $1::timestamptz - INTERVAL '24 hours'
      AND s.bucket < $1::timestamptz
      AND s.parameter IN ('vibration', 'temperature', 'current')
    GROUP BY s.equipment_id, s.parameter
),
maintenance_predictions AS (
    SELECT e.equipment_code,
           e.equipment_name,
           st.parameter,
           st.current_avg,
           st.trend_slope,
           CASE
               WHEN st.parameter = 'vibration' AND st.current_avg > 4.5 THEN 'CRITICAL'
               WHEN st.parameter = 'temperature' AND st.current_avg > 85 THEN 'CRITICAL'
               WHEN st.parameter = 'vibration' AND st.current_avg > 3.5 THEN 'WARNING'
               WHEN st.parameter = 'temperature' AND st.current_avg > 75 THEN 'WARNING'
               ELSE 'NORMAL'
           END AS alert_level,
           CASE WHEN st.trend_slope > 0 AND st.parameter IN ('vibration', 'temperature') THEN
               greatest(0, round(((CASE st.parameter
                                       WHEN 'vibration' THEN 5.0 - st.current_avg
                                       ELSE 90.0 - st.current_avg
                                   END) / (st.trend_slope * 86400))::numeric, 1))
           END AS days_to_threshold
    FROM sensor_trends st
    JOIN dim_equipment e ON e.equipment_id = st.equipment_id
)
SELECT equipment_code,
       equipment_name,
       parameter,
       round(current_avg::numeric, 2) AS current_value,
       alert_level,
       days_to_threshold
FROM maintenance_predictions
WHERE alert_level IN ('WARNING', 'CRITICAL')
ORDER BY CASE alert_level WHEN 'CRITICAL' THEN 0 ELSE 1 END,
         days_to_threshold ASC NULLS LAST,
         equipment_code,
         parameter;
