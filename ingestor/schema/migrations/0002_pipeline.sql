-- The pipeline's bookkeeping: where each daemon's spool stands, the readings kept aside, and an identity for
-- this database.  The same on every tier.

-- One row per daemon (instance_id): the sequence number of the last spool batch committed.  The writer moves
-- it in the same transaction as the batch's COPY, which is what makes replaying the spool exactly-once.
CREATE TABLE ingest_watermark (
    instance_id   VARCHAR(100) PRIMARY KEY,
    last_seq      BIGINT       NOT NULL DEFAULT 0,
    rows_written  BIGINT       NOT NULL DEFAULT 0,
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);
COMMENT ON TABLE ingest_watermark IS
    'per daemon instance: the last spool sequence number committed to fact_sensor_event (written by the ingestor)';

-- Readings that could not be stored in fact_sensor_event, with why: refused by the database (a value or
-- timestamp it cannot store), equipment it does not know, a parameter name too long, …
CREATE TABLE ingest_dead_letter (
    dead_letter_id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    instance_id     VARCHAR(100) NOT NULL,
    spool_seq       BIGINT       NOT NULL,
    reason          VARCHAR(50)  NOT NULL,
    detail          TEXT,
    equipment_code  VARCHAR(100),
    equipment_id    INTEGER,
    parameter       VARCHAR(200),
    unit_code       VARCHAR(50),
    unit_id         INTEGER,
    quality         SMALLINT,
    timestamp_us    BIGINT,
    event_ts        TIMESTAMPTZ,
    value           DOUBLE PRECISION
);
CREATE INDEX idx_dead_letter_recorded ON ingest_dead_letter (recorded_at DESC);
COMMENT ON TABLE ingest_dead_letter IS 'readings kept aside instead of written to fact_sensor_event, with the reason';

-- A random identity, so a spool can tell whether it is talking to the database its dimension keys came from.
CREATE TABLE ingest_database (
    singleton    BOOLEAN      PRIMARY KEY DEFAULT true CHECK (singleton),
    database_id  UUID         NOT NULL DEFAULT gen_random_uuid(),
    created_at   TIMESTAMPTZ  NOT NULL DEFAULT now()
);
INSERT INTO ingest_database DEFAULT VALUES;
