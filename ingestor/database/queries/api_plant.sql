-- The plant tree, sites → areas → work centers → equipment, with what is known about each equipment's state
-- now (GET /api/plant, docs/api.md).
--
-- Parameters:
--   $1  integer[]  the equipment to show (dim_equipment ids, from api_scope.sql); NULL: the whole plant,
--                  also sites, areas and work centers without equipment.  Given: only the branches that lead
--                  to one of them.
-- State: the machine's row in live_equipment_state (migration 0005, kept by the daemon's live task from the
-- committed state readings) when it has one: state, since, reason.  Without one (no live task has seen it):
-- an open stop in derive_stop (the derivation saw the machine stopped at the end of its last window and the
-- stop has not ended since) gives 'stopped', or 'planned_stop' when the state value was a planned-stop value,
-- since the stop's start, with its reason when known.  Otherwise 'unknown'.
-- Output, one row per equipment (and per empty site, area or work center, their lower levels NULL), ordered by
-- site, area, work center and equipment code:
--   site_id, site_code, site_name, timezone, area_id, area_code, area_name,
--   work_center_id, work_center_code, work_center_name,
--   equipment_id, equipment_code, equipment_name, equipment_type, is_active,
--   state ('running', 'stopped', 'planned_stop', 'unknown'), state_since, state_value (the PLC value, live
--   state only), state_updated_at (when the live state was written; NULL without one), state_reason_code,
--   state_reason_description, state_reason_category,
--   open_stop_since, open_stop_planned, open_stop_seen_at (when the derivation last saw it going),
--   open_stop_reason_code, open_stop_reason_description, open_stop_reason_category,
--   last_production_end  end of the equipment's latest production record
SELECT s.site_id, s.site_code, s.site_name, s.timezone,
       a.area_id, a.area_code, a.area_name,
       w.work_center_id, w.work_center_code, w.work_center_name,
       e.equipment_id, e.equipment_code, e.equipment_name, e.equipment_type, e.is_active,
       CASE WHEN e.equipment_id IS NULL THEN NULL
            WHEN live.state IS NOT NULL THEN live.state
            WHEN stop.start_time IS NULL THEN 'unknown'
            WHEN stop.planned_state THEN 'planned_stop'
            ELSE 'stopped' END                    AS state,
       CASE WHEN live.state IS NOT NULL THEN live.since ELSE stop.start_time END AS state_since,
       live.state_value                           AS state_value,
       live.updated_at                            AS state_updated_at,
       state_reason.reason_code                   AS state_reason_code,
       state_reason.reason_description            AS state_reason_description,
       state_reason.reason_category               AS state_reason_category,
       stop.start_time                            AS open_stop_since,
       stop.planned_state                         AS open_stop_planned,
       stop.open_at                               AS open_stop_seen_at,
       r.reason_code                              AS open_stop_reason_code,
       r.reason_description                       AS open_stop_reason_description,
       r.reason_category                          AS open_stop_reason_category,
       last_record.end_time                       AS last_production_end
FROM dim_site s
LEFT JOIN dim_area a ON a.site_id = s.site_id
LEFT JOIN dim_work_center w ON w.area_id = a.area_id
LEFT JOIN dim_equipment e ON e.work_center_id = w.work_center_id
LEFT JOIN LATERAL (
    SELECT ds.start_time, ds.planned_state, ds.reason_id, ds.open_at
    FROM derive_stop ds
    WHERE ds.equipment_id = e.equipment_id AND ds.end_time IS NULL
    ORDER BY ds.start_time DESC
    LIMIT 1
) stop ON true
LEFT JOIN dim_downtime_reason r ON r.reason_id = stop.reason_id
LEFT JOIN live_equipment_state live ON live.equipment_id = e.equipment_id
LEFT JOIN dim_downtime_reason state_reason
       ON state_reason.reason_id = CASE WHEN live.state IS NOT NULL THEN live.reason_id ELSE stop.reason_id END
LEFT JOIN LATERAL (
    SELECT p.end_time
    FROM fact_production p
    WHERE p.equipment_id = e.equipment_id
    ORDER BY p.start_time DESC
    LIMIT 1
) last_record ON true
WHERE $1::integer[] IS NULL OR e.equipment_id = ANY ($1::integer[])
ORDER BY s.site_code, a.area_code NULLS FIRST, w.work_center_code NULLS FIRST, e.equipment_code NULLS FIRST;
