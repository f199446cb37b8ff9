-- The production records summed per machine, production day, shift and product, kept current by a trigger,
-- so that the API's windows over weeks or months of records add up a few sums per shift instead of every
-- record (docs/api.md "Measurements").  The sums are exact: a window takes the rollup rows that lie wholly
-- inside it, and the records themselves of the few shifts its edges cut (production_sums()).
--
-- The ideal time is not stored: it is parts × the ideal cycle time, which comes from the dimensions at query
-- time exactly as in production_ideal_time (one rollup row per product, so one cycle time per row), and a
-- changed target_cycle_time or theoretical_rate applies to the rollup and the records alike.

-- @tier: all

-- The ideal cycle time (ms) of a part: the product's target_cycle_time, else 3600000 / the equipment's
-- theoretical_rate (parts per hour); NULL when neither is known.  production_ideal_time (0004) and
-- production_sums() both use it.
CREATE FUNCTION ideal_cycle_ms(target_cycle_time bigint, theoretical_rate numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(target_cycle_time::numeric, 3600000.0 / NULLIF(theoretical_rate, 0))
$$;

-- The same view (same columns, same values), on the function, and with the two columns the rollup's edge
-- records need at the end.
CREATE OR REPLACE VIEW production_ideal_time AS
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
       (ideal.cycle_ms IS NOT NULL OR p.total_parts_produced = 0) AS ideal_known,
       p.product_id,
       COALESCE(p.scrap_parts, 0)                               AS scrap_parts
FROM fact_production p
JOIN dim_equipment e ON e.equipment_id = p.equipment_id
LEFT JOIN dim_product pr ON pr.product_id = p.product_id
CROSS JOIN LATERAL (SELECT ideal_cycle_ms(pr.target_cycle_time, e.theoretical_rate) AS cycle_ms) ideal;

CREATE TABLE agg_production_shift (
    equipment_id             INTEGER     NOT NULL,
    date_id                  INTEGER     NOT NULL,
    shift_id                 INTEGER     NOT NULL,
    product_id               INTEGER,
    first_start              TIMESTAMPTZ NOT NULL,
    last_start               TIMESTAMPTZ NOT NULL,
    records                  INTEGER     NOT NULL,
    planned_production_time  BIGINT      NOT NULL,
    operating_time           BIGINT      NOT NULL,
    total_parts_produced     BIGINT      NOT NULL,
    good_parts               BIGINT      NOT NULL,
    scrap_parts              BIGINT      NOT NULL,
    CONSTRAINT agg_production_shift_key UNIQUE NULLS NOT DISTINCT (equipment_id, date_id, shift_id, product_id)
);
COMMENT ON TABLE agg_production_shift IS
    'fact_production summed per equipment, production day, shift and product (kept by a trigger); '
    'first_start and last_start bound the start_time of its records. production_sums() reads it';
-- windows find their rows by the span of the records' starts
CREATE INDEX idx_agg_production_shift_span ON agg_production_shift
    USING gist (tstzrange(first_start, last_start, '[]'));
-- a changed or deleted record recomputes its group from its records
CREATE INDEX idx_production_group ON fact_production (equipment_id, date_id, shift_id);

CREATE FUNCTION agg_production_shift_recompute(p_equipment integer, p_date integer, p_shift integer,
                                               p_product integer) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM agg_production_shift
    WHERE equipment_id = p_equipment AND date_id = p_date AND shift_id = p_shift
      AND product_id IS NOT DISTINCT FROM p_product;
    INSERT INTO agg_production_shift
    SELECT p_equipment, p_date, p_shift, p_product, min(start_time), max(start_time), count(*),
           sum(planned_production_time), sum(operating_time), sum(total_parts_produced), sum(good_parts),
           sum(COALESCE(scrap_parts, 0))
    FROM fact_production
    WHERE equipment_id = p_equipment AND date_id = p_date AND shift_id = p_shift
      AND product_id IS NOT DISTINCT FROM p_product
    HAVING count(*) > 0;
$$;

-- A new record adds to its group; a changed or deleted one has its group (both groups, if it moved)
-- recomputed from the records, which also keeps first_start and last_start exact.
CREATE FUNCTION agg_production_shift_maintain() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agg_production_shift AS g
        VALUES (NEW.equipment_id, NEW.date_id, NEW.shift_id, NEW.product_id, NEW.start_time, NEW.start_time, 1,
                NEW.planned_production_time, NEW.operating_time, NEW.total_parts_produced, NEW.good_parts,
                COALESCE(NEW.scrap_parts, 0))
        ON CONFLICT ON CONSTRAINT agg_production_shift_key DO UPDATE
        SET first_start = least(g.first_start, EXCLUDED.first_start),
            last_start = greatest(g.last_start, EXCLUDED.last_start),
            records = g.records + 1,
            planned_production_time = g.planned_production_time + EXCLUDED.planned_production_time,
            operating_time = g.operating_time + EXCLUDED.operating_time,
            total_parts_produced = g.total_parts_produced + EXCLUDED.total_parts_produced,
            good_parts = g.good_parts + EXCLUDED.good_parts,
            scrap_parts = g.scrap_parts + EXCLUDED.scrap_parts;
        RETURN NULL;
    END IF;
    PERFORM agg_production_shift_recompute(OLD.equipment_id, OLD.date_id, OLD.shift_id, OLD.product_id);
    IF TG_OP = 'UPDATE' AND (NEW.equipment_id, NEW.date_id, NEW.shift_id, NEW.product_id)
                            IS DISTINCT FROM (OLD.equipment_id, OLD.date_id, OLD.shift_id, OLD.product_id) THEN
        PERFORM agg_production_shift_recompute(NEW.equipment_id, NEW.date_id, NEW.shift_id, NEW.product_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER trg_agg_production_shift AFTER INSERT OR UPDATE OR DELETE ON fact_production
    FOR EACH ROW EXECUTE FUNCTION agg_production_shift_maintain();

CREATE FUNCTION agg_production_shift_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE agg_production_shift;
    RETURN NULL;
END
$$;
CREATE TRIGGER trg_agg_production_shift_truncate AFTER TRUNCATE ON fact_production
    FOR EACH STATEMENT EXECUTE FUNCTION agg_production_shift_truncate();

-- Rebuild from the records (the records already there when this migration runs; or by hand, should the
-- rollup ever be doubted: SELECT rebuild_agg_production_shift()).  Returns the number of rollup rows.
CREATE FUNCTION rebuild_agg_production_shift() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    LOCK TABLE fact_production IN SHARE MODE;   -- no record changes while the sums are taken
    DELETE FROM agg_production_shift;
    INSERT INTO agg_production_shift
    SELECT equipment_id, date_id, shift_id, product_id, min(start_time), max(start_time), count(*),
           sum(planned_production_time), sum(operating_time), sum(total_parts_produced), sum(good_parts),
           sum(COALESCE(scrap_parts, 0))
    FROM fact_production
    GROUP BY equipment_id, date_id, shift_id, product_id;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;
SELECT rebuild_agg_production_shift();

-- The production records starting in [window_start, window_end), as sums: one row per rollup row that lies
-- wholly on one side of split (and inside the window), one row per record of the groups an edge cuts.
-- in_second: the row's records start at or after split (the API's window after the one before it, for the
-- trend; split = window_start when there is no such division).  Summing these rows over any grouping gives
-- what summing production_ideal_time's records would.  equipment / shifts: dim ids; NULL: all.
CREATE FUNCTION production_sums(window_start timestamptz, split timestamptz, window_end timestamptz,
                                equipment integer[], shifts integer[])
RETURNS TABLE (equipment_id integer, shift_id integer, date_id integer, in_second boolean,
               planned_production_time numeric, operating_time numeric, theoretical_time numeric,
               ideal_known boolean, total_parts_produced bigint, good_parts bigint, scrap_parts bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH touching AS (
        SELECT g.*,
               g.first_start >= window_start AND g.last_start < window_end
               AND (g.last_start < split OR g.first_start >= split) AS whole
        FROM agg_production_shift g
        WHERE tstzrange(g.first_start, g.last_start, '[]') && tstzrange(window_start, window_end, '[)')
          AND (equipment IS NULL OR g.equipment_id = ANY (equipment))
          AND (shifts IS NULL OR g.shift_id = ANY (shifts))
    )
    SELECT g.equipment_id, g.shift_id, g.date_id, g.first_start >= split,
           g.planned_production_time::numeric, g.operating_time::numeric,
           g.total_parts_produced * ideal.cycle_ms,
           (ideal.cycle_ms IS NOT NULL OR g.total_parts_produced = 0),
           g.total_parts_produced, g.good_parts, g.scrap_parts
    FROM touching g
    JOIN dim_equipment e ON e.equipment_id = g.equipment_id
    LEFT JOIN dim_product pr ON pr.product_id = g.product_id
    CROSS JOIN LATERAL (SELECT ideal_cycle_ms(pr.target_cycle_time, e.theoretical_rate) AS cycle_ms) ideal
    WHERE g.whole
    UNION ALL
    SELECT p.equipment_id, p.shift_id, p.date_id, p.start_time >= split,
           p.planned_production_time::numeric, p.operating_time::numeric, p.theoretical_time, p.ideal_known,
           p.total_parts_produced::bigint, p.good_parts::bigint, p.scrap_parts::bigint
    FROM touching g
    -- the records of each cut group through idx_production_group; OFFSET 0 keeps the planner from turning
    -- this into a scan of every record in the window (it cannot know how few groups are cut)
    CROSS JOIN LATERAL (
        SELECT * FROM production_ideal_time p
        WHERE p.equipment_id = g.equipment_id AND p.date_id = g.date_id AND p.shift_id = g.shift_id
          AND p.product_id IS NOT DISTINCT FROM g.product_id
          AND p.start_time >= window_start AND p.start_time < window_end
        OFFSET 0) p
    WHERE NOT g.whole
$$;
