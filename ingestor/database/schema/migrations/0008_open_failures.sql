-- A breakdown still in progress is a failure.  The same on every tier.  Self-contained (it replaces 0004's
-- reliability() and the view built on it), so it can be renumbered when another migration lands first.
--
-- A stop has its fact_downtime row only once it has ended (docs/oee.md "Restarts and stops in progress"); until
-- then the derivation keeps it in derive_stop with end_time NULL.  So a machine broken now, or at the end of its
-- data, had no failure in view_reliability_summary or the API.  Now reliability() also counts each machine's
-- open stop (its latest derive_stop row without an end and without a downtime row at its start, so a stop is
-- never counted twice: the derivation writes the row and closes the derive_stop row in one transaction):
--
-- * restored already when the machine's live state (live_equipment_state, 0005) moved on to another state
--   value after the stop began: the repair took live.since - start, as the downtime row the derivation will
--   write shortly says;
-- * in progress otherwise: its repair time so far is now() - start.
--
-- failure_count counts every failure starting in the window, those in progress included (MTBF = operating
-- hours / failures: the operating time before a breakdown was as long whether or not it is repaired yet).
-- MTTR is the mean time to restoration of the restored failures only: an unfinished repair's time so far is a
-- lower bound, not a time to restoration, and counting it would make MTTR fall when a long breakdown begins.
-- total_failure_hours is the failure downtime so far, open repairs up to now included; open_failure_count and
-- open_failure_hours say how much of it is still going.

-- @tier: all

DROP MATERIALIZED VIEW IF EXISTS view_reliability_summary;
DROP FUNCTION IF EXISTS reliability(timestamptz, timestamptz);

CREATE FUNCTION reliability(from_time timestamptz, to_time timestamptz)
RETURNS TABLE (equipment_id integer, equipment_code varchar, equipment_name varchar, failure_count bigint,
               operating_hours numeric, total_failure_hours numeric, mtbf_hours numeric, mttr_hours numeric,
               open_failure_count bigint, open_failure_hours numeric)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path FROM CURRENT AS $$
    WITH open_stop AS (
        SELECT DISTINCT ON (ds.equipment_id)
               ds.equipment_id, ds.start_time, ds.reason_id,
               CASE WHEN live.since > ds.start_time AND live.state_value IS NOT NULL
                         AND live.state_value IS DISTINCT FROM ds.state_value
                    THEN live.since END AS restored_at
        FROM derive_stop ds
        LEFT JOIN live_equipment_state live ON live.equipment_id = ds.equipment_id
        WHERE ds.end_time IS NULL
        ORDER BY ds.equipment_id, ds.start_time DESC
    ), stops AS (
        SELECT d.equipment_id, d.reason_id, d.start_time,
               d.downtime_duration / 3600000.0 AS hours, true AS restored
        FROM fact_downtime d
        WHERE d.start_time >= from_time AND d.start_time < to_time
        UNION ALL
        SELECT o.equipment_id, o.reason_id, o.start_time,
               extract(epoch FROM COALESCE(o.restored_at, now()) - o.start_time) / 3600.0,
               o.restored_at IS NOT NULL
        FROM open_stop o
        WHERE o.start_time >= from_time AND o.start_time < to_time
          AND NOT EXISTS (SELECT 1 FROM fact_downtime d
                          WHERE d.equipment_id = o.equipment_id AND d.start_time = o.start_time)
    ), failures AS (
        SELECT s.equipment_id,
               count(*)                                              AS failure_count,
               sum(s.hours)                                          AS failure_hours,
               count(*) FILTER (WHERE s.restored)                    AS restored_count,
               sum(s.hours) FILTER (WHERE s.restored)                AS restored_hours,
               count(*) FILTER (WHERE NOT s.restored)                AS open_count,
               COALESCE(sum(s.hours) FILTER (WHERE NOT s.restored), 0) AS open_hours
        FROM stops s
        JOIN dim_downtime_reason r ON r.reason_id = s.reason_id
        WHERE r.is_failure
        GROUP BY s.equipment_id
    ), runtime AS (
        SELECT p.equipment_id,
               sum(p.operating_time) / 3600000.0 AS operating_hours
        FROM fact_production p
        WHERE p.start_time >= from_time AND p.start_time < to_time
        GROUP BY p.equipment_id
    )
    SELECT e.equipment_id,
           e.equipment_code,
           e.equipment_name,
           COALESCE(f.failure_count, 0),
           COALESCE(r.operating_hours, 0),
           COALESCE(f.failure_hours, 0),
           r.operating_hours / NULLIF(f.failure_count, 0),
           f.restored_hours / NULLIF(f.restored_count, 0),
           COALESCE(f.open_count, 0),
           COALESCE(f.open_hours, 0)
    FROM dim_equipment e
    LEFT JOIN failures f ON f.equipment_id = e.equipment_id
    LEFT JOIN runtime r ON r.equipment_id = e.equipment_id
$$;

-- MTBF and MTTR per equipment over the 90 days before the refresh (as 0004), open failures up to the refresh.
CREATE MATERIALIZED VIEW view_reliability_summary AS
SELECT r.*, w.window_start, w.window_end
FROM (SELECT now() - INTERVAL '90 days' AS window_start, now() AS window_end) w
CROSS JOIN LATERAL reliability(w.window_start, w.window_end) r
WITH DATA;
CREATE UNIQUE INDEX idx_reliability_summary_pk ON view_reliability_summary (equipment_id);
