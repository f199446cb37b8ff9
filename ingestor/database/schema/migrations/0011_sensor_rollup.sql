-- sensor_5min_avg maintained incrementally where there are no continuous aggregates (PostgreSQL, TimescaleDB
-- Apache edition): a refresh recomputes only the 5-minute buckets that received readings since the last
-- refresh, so its cost follows the new data, not the 24-hour window (docs/schema.md "sensor_5min_avg").
--
-- sensor_5min_rollup holds sum, count, min and max per (bucket, equipment, parameter), so averages over
-- longer spans combine exactly (sum of sums / sum of counts).  sensor_5min_avg becomes a plain view over it
-- with the columns it always had, limited to the last 24 hours as before.
--
-- Which buckets to recompute: a statement trigger on fact_sensor_event (after each INSERT or COPY, with the
-- statement's new rows as a transition table) records the (bucket, equipment, parameter) keys it touched in
-- sensor_5min_dirty, in the writer's own transaction, so the keys commit exactly when the readings do, from
-- the daemon's COPY or any other insert; a late reading (an old timestamp arriving now) marks its old bucket.
-- The refresh deletes the dirty keys it can see and recomputes those whole buckets from fact_sensor_event in
-- one transaction: keys committed after its DELETE stay for the next refresh (their readings may be
-- invisible to it), a crash rolls back both the rollup rows and the deletion, so the next refresh redoes the
-- same buckets.  The dirty table has no unique key, so a writer never waits for a refresh.  Two refreshes are
-- serialised by the state row (SELECT ... FOR UPDATE).

-- Buckets older than 24 hours are deleted from the table by each refresh and late readings older than that
-- are not aggregated: the documented 24-hour horizon, a bounded table, and no bucket is ever recomputed from
-- raw rows that retention (database.retention, at least a day) may have started to delete.

-- @tier: not-full

DROP MATERIALIZED VIEW sensor_5min_avg;

CREATE TABLE sensor_5min_rollup (
    bucket        TIMESTAMPTZ      NOT NULL,
    equipment_id  INTEGER          NOT NULL,
    parameter     VARCHAR(100) COLLATE "C" NOT NULL,
    sum_value     DOUBLE PRECISION NOT NULL,
    sample_count  BIGINT           NOT NULL,
    min_value     DOUBLE PRECISION NOT NULL,
    max_value     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (bucket, equipment_id, parameter)
);
COMMENT ON TABLE sensor_5min_rollup IS
    'good and uncertain readings (quality < 2) per 5-minute bucket, last 24 hours; read it through sensor_5min_avg';

CREATE TABLE sensor_5min_dirty (
    bucket        TIMESTAMPTZ      NOT NULL,
    equipment_id  INTEGER          NOT NULL,
    parameter     VARCHAR(100) COLLATE "C" NOT NULL
);
COMMENT ON TABLE sensor_5min_dirty IS 'buckets of sensor_5min_rollup that received readings since the last refresh';

CREATE TABLE sensor_5min_rollup_state (
    only_row      BOOLEAN     PRIMARY KEY DEFAULT true CHECK (only_row),
    refreshed_at  TIMESTAMPTZ
);
INSERT INTO sensor_5min_rollup_state DEFAULT VALUES;

-- The start of the oldest bucket inside the 24-hour horizon at time t.
CREATE FUNCTION sensor_5min_horizon(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin(INTERVAL '5 minutes', t - INTERVAL '24 hours', TIMESTAMPTZ '2000-01-01 00:00:00+00')
$$;

CREATE VIEW sensor_5min_avg AS
SELECT bucket,
       equipment_id,
       parameter,
       sum_value / sample_count AS avg_value,
       min_value,
       max_value,
       sample_count
FROM sensor_5min_rollup
WHERE bucket >= sensor_5min_horizon(now());

CREATE FUNCTION sensor_5min_mark_dirty() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sensor_5min_dirty (bucket, equipment_id, parameter)
    SELECT DISTINCT date_bin(INTERVAL '5 minutes', event_ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           equipment_id, parameter
      FROM new_readings
     WHERE event_ts >= sensor_5min_horizon(now());
    RETURN NULL;
END
$$;
CREATE TRIGGER sensor_5min_mark_dirty AFTER INSERT ON fact_sensor_event
    REFERENCING NEW TABLE AS new_readings FOR EACH STATEMENT EXECUTE FUNCTION sensor_5min_mark_dirty();

-- One incremental refresh; returns the number of (bucket, equipment, parameter) keys recomputed.
CREATE FUNCTION ingestor_refresh_sensor_5min() RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    horizon  timestamptz := sensor_5min_horizon(now());
    touched  bigint;
    b        timestamptz;
    n        bigint;
BEGIN
    PERFORM 1 FROM sensor_5min_rollup_state WHERE only_row FOR UPDATE;  -- one refresh at a time
    CREATE TEMP TABLE IF NOT EXISTS sensor_5min_keys (
        bucket timestamptz, equipment_id integer, parameter varchar(100) COLLATE "C") ON COMMIT DELETE ROWS;
    TRUNCATE pg_temp.sensor_5min_keys;
    WITH taken AS (DELETE FROM sensor_5min_dirty RETURNING bucket, equipment_id, parameter)
    INSERT INTO pg_temp.sensor_5min_keys
    SELECT DISTINCT bucket, equipment_id, parameter FROM taken WHERE bucket >= horizon;
    GET DIAGNOSTICS touched = ROW_COUNT;
    IF touched > 0 THEN
        ANALYZE pg_temp.sensor_5min_keys;
        -- A bucket whose readings are all bad quality has no row.
        DELETE FROM sensor_5min_rollup r USING pg_temp.sensor_5min_keys k
         WHERE r.bucket = k.bucket AND r.equipment_id = k.equipment_id AND r.parameter = k.parameter;
        -- Per dirty bucket: a bucket with many dirty series (the current ones) is read whole by its time range
        -- (BRIN on event_ts, a chunk on TimescaleDB); a few series in a bucket (late readings) by the
        -- (equipment_id, parameter, event_ts) index.
        FOR b, n IN SELECT k.bucket, count(*) FROM pg_temp.sensor_5min_keys k GROUP BY k.bucket LOOP
            IF n > 64 THEN
                INSERT INTO sensor_5min_rollup (bucket, equipment_id, parameter, sum_value, sample_count,
                                                min_value, max_value)
                SELECT b, f.equipment_id, f.parameter, sum(f.value), count(*), min(f.value), max(f.value)
                  FROM fact_sensor_event f
                 WHERE f.event_ts >= b AND f.event_ts < b + INTERVAL '5 minutes' AND f.quality < 2
                   AND (f.equipment_id, f.parameter) IN (SELECT k.equipment_id, k.parameter
                                                           FROM pg_temp.sensor_5min_keys k WHERE k.bucket = b)
                 GROUP BY f.equipment_id, f.parameter;
            ELSE
                INSERT INTO sensor_5min_rollup (bucket, equipment_id, parameter, sum_value, sample_count,
                                                min_value, max_value)
                SELECT b, k.equipment_id, k.parameter, sum(f.value), count(*), min(f.value), max(f.value)
                  FROM pg_temp.sensor_5min_keys k
                  JOIN fact_sensor_event f
                    ON f.equipment_id = k.equipment_id AND f.parameter = k.parameter
                   AND f.event_ts >= b AND f.event_ts < b + INTERVAL '5 minutes'
                 WHERE k.bucket = b AND f.quality < 2
                 GROUP BY k.equipment_id, k.parameter;
            END IF;
        END LOOP;
    END IF;
    DELETE FROM sensor_5min_rollup WHERE bucket < horizon;
    UPDATE sensor_5min_rollup_state SET refreshed_at = now() WHERE only_row;
    RETURN touched;
END
$$;
REVOKE ALL ON FUNCTION ingestor_refresh_sensor_5min() FROM PUBLIC;

-- The readings already there when this migration runs: their buckets of the last 24 hours, the first refresh
-- aggregates them.
INSERT INTO sensor_5min_dirty (bucket, equipment_id, parameter)
SELECT DISTINCT date_bin(INTERVAL '5 minutes', event_ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), equipment_id,
       parameter
  FROM fact_sensor_event WHERE event_ts >= sensor_5min_horizon(now());

-- @tier: all

-- ingestor_refresh_view (0010) hands sensor_5min_avg to the incremental refresh where there is one.
CREATE OR REPLACE FUNCTION ingestor_refresh_view(view_name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    home      name := current_schema();
    populated boolean;
BEGIN
    IF view_name NOT IN ('view_oee_daily', 'view_reliability_summary', 'sensor_5min_avg') THEN
        RAISE EXCEPTION '% is not a view the ingestor refreshes', view_name USING ERRCODE = '22023';
    END IF;
    IF view_name = 'sensor_5min_avg'
       AND to_regprocedure(format('%I.ingestor_refresh_sensor_5min()', home)) IS NOT NULL THEN
        EXECUTE format('SELECT %I.ingestor_refresh_sensor_5min()', home);
        RETURN;
    END IF;
    SELECT c.relispopulated INTO populated FROM pg_class c
     WHERE c.relkind = 'm' AND c.relname = view_name AND c.relnamespace = home::regnamespace;
    IF populated IS NULL THEN
        RAISE EXCEPTION '% is not a materialized view in schema %', view_name, home USING ERRCODE = '42809';
    END IF;
    IF populated THEN
        EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I.%I', home, view_name);
    ELSE
        EXECUTE format('REFRESH MATERIALIZED VIEW %I.%I', home, view_name);
    END IF;
END
$$;
