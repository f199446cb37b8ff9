-- One definition of each formula: OEE (ISO 22400) and MTBF/MTTR (ISO 14224) as SQL functions, which
-- view_oee_daily, view_reliability_summary, the query files and the API all call, so that a dashboard, a
-- report and a test can never disagree on what availability or MTBF means.
--
-- Databases built with the 0.1 text of 0001 had both views defined there; they are replaced here by the same
-- views on these functions (same columns, same values).  docs/oee.md explains the formulas.

-- @tier: all

-- The ideal time of each production record: parts × the ideal cycle time, the product's target_cycle_time,
-- else 3600000 / the equipment's theoretical_rate (ms).  ideal_known is false for a record that produced
-- parts while neither is known: its performance cannot be computed.
CREATE VIEW production_ideal_time AS
SELECT p.production_id,
       p.equipment_id,
       p.date_id,
       p.shift_id,
       p.start_time,
       p.end_time,
       p.planned_production_time,
       p.operating_time,
       p.total_parts_produced,
       p.good_parts,
       p.total_parts_produced * ideal.cycle_ms                  AS theoretical_time,
       (ideal.cycle_ms IS NOT NULL OR p.total_parts_produced = 0) AS ideal_known
FROM fact_production p
JOIN dim_equipment e ON e.equipment_id = p.equipment_id
LEFT JOIN dim_product pr ON pr.product_id = p.product_id
CROSS JOIN LATERAL (
    SELECT COALESCE(pr.target_cycle_time::numeric, 3600000.0 / NULLIF(e.theoretical_rate, 0)) AS cycle_ms
) ideal;
COMMENT ON VIEW production_ideal_time IS
    'fact_production with each record''s ideal time (ms), the input of oee_ratios()';

-- OEE of any set of production records from its sums (so shifts, days, weeks and lines all use it):
--   availability = operating time / planned production time, capped at 1
--   performance  = ideal time / operating time, capped at 1; NULL when an ideal cycle time is missing
--   quality      = good parts / total parts
--   oee          = availability × performance × quality, and 0 when nothing ran (availability 0)
-- Capped with CASE, not LEAST: LEAST(NULL, 1.0) is 1.0, which would turn "unknown" into 100 %.
CREATE FUNCTION oee_ratios(operating_time numeric, planned_time numeric, theoretical_time numeric,
                           ideal_known boolean, good_parts numeric, total_parts numeric,
                           OUT availability double precision, OUT performance double precision,
                           OUT quality double precision, OUT oee double precision)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH raw AS (
        SELECT operating_time::double precision / NULLIF(planned_time, 0) AS availability,
               CASE WHEN ideal_known THEN theoretical_time::double precision / NULLIF(operating_time, 0) END
                   AS performance,
               good_parts::double precision / NULLIF(total_parts, 0) AS quality
    ), capped AS (
        SELECT CASE WHEN availability > 1 THEN 1.0 ELSE availability END AS availability,
               CASE WHEN performance > 1 THEN 1.0 ELSE performance END   AS performance,
               quality
        FROM raw
    )
    SELECT availability, performance, quality,
           CASE WHEN availability = 0 THEN 0.0 ELSE availability * performance * quality END
    FROM capped
$$;

-- The two table functions below read tables, so they carry the search path they were created with: PostgreSQL
-- 17 refreshes materialized views with search_path = pg_catalog, under which their bodies would not find
-- production_ideal_time or fact_downtime.  (oee_ratios reads no table and needs none.)

-- OEE per production day, shift and equipment of the records starting in [from_time, to_time).
CREATE FUNCTION oee_by_shift(from_time timestamptz, to_time timestamptz)
RETURNS TABLE (date_id integer, shift_id integer, equipment_id integer, total_operating_time numeric,
               total_planned_time numeric, total_parts bigint, good_parts bigint,
               availability double precision, performance double precision, quality double precision,
               oee double precision)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path FROM CURRENT AS $$
    SELECT s.date_id, s.shift_id, s.equipment_id, s.total_operating_time, s.total_planned_time, s.total_parts,
           s.good_parts, r.availability, r.performance, r.quality, r.oee
    FROM (
        SELECT p.date_id, p.shift_id, p.equipment_id,
               sum(p.operating_time)          AS total_operating_time,
               sum(p.planned_production_time) AS total_planned_time,
               sum(p.total_parts_produced)    AS total_parts,
               sum(p.good_parts)              AS good_parts,
               sum(p.theoretical_time)        AS total_theoretical_time,
               bool_and(p.ideal_known)        AS ideal_known
        FROM production_ideal_time p
        WHERE p.start_time >= from_time AND p.start_time < to_time
        GROUP BY p.date_id, p.shift_id, p.equipment_id
    ) s
    CROSS JOIN LATERAL oee_ratios(s.total_operating_time, s.total_planned_time, s.total_theoretical_time,
                                  s.ideal_known, s.good_parts, s.total_parts) r
$$;

-- MTBF and MTTR per equipment, every equipment (also those that never failed), of failures and production
-- records starting in [from_time, to_time): MTBF = operating hours / failures, MTTR = failure downtime hours /
-- failures; both NULL without a failure (not 0).
CREATE FUNCTION reliability(from_time timestamptz, to_time timestamptz)
RETURNS TABLE (equipment_id integer, equipment_code varchar, equipment_name varchar, failure_count bigint,
               operating_hours numeric, total_failure_hours numeric, mtbf_hours numeric, mttr_hours numeric)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path FROM CURRENT AS $$
    WITH failures AS (
        SELECT d.equipment_id,
               count(*)                             AS failure_count,
               sum(d.downtime_duration) / 3600000.0 AS failure_hours
        FROM fact_downtime d
        JOIN dim_downtime_reason r ON r.reason_id = d.reason_id
        WHERE r.is_failure AND d.start_time >= from_time AND d.start_time < to_time
        GROUP BY d.equipment_id
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
           f.failure_hours / NULLIF(f.failure_count, 0)
    FROM dim_equipment e
    LEFT JOIN failures f ON f.equipment_id = e.equipment_id
    LEFT JOIN runtime r ON r.equipment_id = e.equipment_id
$$;

DROP MATERIALIZED VIEW IF EXISTS view_oee_daily;
DROP MATERIALIZED VIEW IF EXISTS view_reliability_summary;

-- OEE per production day, shift and equipment, over all history.  date_id is the site-local production day.
CREATE MATERIALIZED VIEW view_oee_daily AS
SELECT o.date_id,
       to_date(o.date_id::text, 'YYYYMMDD') AS production_date,
       o.shift_id,
       o.equipment_id,
       o.total_operating_time,
       o.total_planned_time,
       o.total_parts,
       o.good_parts,
       o.availability,
       o.performance,
       o.quality,
       o.oee
FROM oee_by_shift('-infinity', 'infinity') o
WITH DATA;
CREATE UNIQUE INDEX idx_oee_daily_pk ON view_oee_daily (date_id, shift_id, equipment_id);

-- MTBF and MTTR per equipment over the 90 days before the refresh.
CREATE MATERIALIZED VIEW view_reliability_summary AS
SELECT r.*, w.window_start, w.window_end
FROM (SELECT now() - INTERVAL '90 days' AS window_start, now() AS window_end) w
CROSS JOIN LATERAL reliability(w.window_start, w.window_end) r
WITH DATA;
CREATE UNIQUE INDEX idx_reliability_summary_pk ON view_reliability_summary (equipment_id);
