-- The pipeline's bookkeeping: where each spool stands, the readings kept aside, and an identity for
-- this database.  The same on every tier.

-- One row per spool (a daemon's local store-and-forward file, identified by a random id made when the file is
-- created): the sequence number of the last spool batch committed.  The writer moves it in the same
-- transaction as the batch's COPY, which is what makes replaying the spool exactly-once.  It is keyed by the
-- spool, not by instance_id, because sequence numbers only mean something to the spool that handed them out:
-- a replaced spool, or two daemons configured with the same instance_id, must never skip each other's batches.
CREATE TABLE ingest_watermark (
    spool_id      UUID         PRIMARY KEY,
    instance_id   VARCHAR(100) NOT NULL,
    last_seq      BIGINT       NOT NULL DEFAULT 0,
    rows_written  BIGINT       NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_watermark_instance ON ingest_watermark (instance_id);
COMMENT ON TABLE ingest_watermark IS
    'per spool: the last spool sequence number committed to fact_sensor_event (written by the ingestor)';

-- Readings that could not be stored in fact_sensor_event, with why: refused by the database (a value or
-- timestamp it cannot store), equipment it does not know, a parameter name too long, …
CREATE TABLE ingest_dead_letter (
    dead_letter_id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    instance_id     VARCHAR(100) NOT NULL,
    spool_id        UUID         NOT NULL,
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
