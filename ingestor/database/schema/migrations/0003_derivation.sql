-- The bookkeeping of the derived production and downtime facts (ingestor/derive): where each machine's
-- derivation stands, the stops it has seen, how far each daemon has read fact_sensor_event, and an index to
-- find the readings inserted since.  The same on every tier.

-- event_id grows with insertion order, and a table that is only appended to keeps rows in that order on disk
-- (on TimescaleDB: within each chunk, and a late reading is appended to its old chunk), so a BRIN index finds
-- "readings inserted after event_id N" by reading only the newest pages of each chunk.  BRIN costs ingest
-- almost nothing (docs/oee.md "Measurements").
CREATE INDEX idx_sensor_event_id_brin ON fact_sensor_event USING BRIN (event_id) WITH (autosummarize = on);

-- One row per derived machine.  derived_until: the facts of everything before it have been derived from the
-- readings present at that time.  pending_from: readings arrived late (event_ts before derived_until) from this
-- instant on, so the facts from here must be derived again.
CREATE TABLE derive_equipment (
    equipment_id   INTEGER      PRIMARY KEY REFERENCES dim_equipment (equipment_id),
    derived_until  TIMESTAMPTZ  NOT NULL,
    pending_from   TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT chk_derive_pending CHECK (pending_from IS NULL OR pending_from < derived_until)
);
COMMENT ON TABLE derive_equipment IS 'per machine: how far production and downtime facts are derived (ingestor)';

-- Every stop interval the derivation found, also those without a fact_downtime row (micro-stops counted as
-- running, stops without a reason, stops still going).  A derivation that starts inside a stop continues it
-- from here, so a stop is one interval (one downtime row) however many runs, restarts or windows it spans.
-- open_at: the stop was still going at the end of the window that wrote the row (end_time is then NULL).
CREATE TABLE derive_stop (
    equipment_id   INTEGER          NOT NULL REFERENCES dim_equipment (equipment_id),
    start_time     TIMESTAMPTZ      NOT NULL,
    end_time       TIMESTAMPTZ,
    open_at        TIMESTAMPTZ,
    state_value    DOUBLE PRECISION NOT NULL,
    planned_state  BOOLEAN          NOT NULL,
    reason_id      INTEGER          REFERENCES dim_downtime_reason (reason_id),
    PRIMARY KEY (equipment_id, start_time),
    CONSTRAINT chk_derive_stop_end CHECK ((end_time IS NULL) <> (open_at IS NULL)),
    CONSTRAINT chk_derive_stop_times CHECK (COALESCE(end_time, open_at) >= start_time)
);
COMMENT ON TABLE derive_stop IS 'every stop interval found by the derivation, open or closed (ingestor)';

-- Per daemon and set of derived machines: the highest fact_sensor_event.event_id read.  Readings with a
-- higher id arrived since; the earliest event_ts among them marks what must be derived again.
CREATE TABLE derive_watermark (
    scope          VARCHAR(200) PRIMARY KEY,
    instance_id    VARCHAR(100) NOT NULL,
    equipment_ids  INTEGER[]    NOT NULL,
    last_event_id  BIGINT       NOT NULL,
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now()
);
COMMENT ON TABLE derive_watermark IS
    'per daemon instance and machine set: the last fact_sensor_event.event_id the derivation has read (ingestor)';
