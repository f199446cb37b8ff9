-- Live events (the specification's WebSocket events) and the live state of each machine.  The same on every
-- tier.  docs/api.md "Live events" says what each event means and when it is emitted.
--
-- An event is a row of api_event, emitted in the transaction that makes it true (the daemon's live task for
-- downtime, production and quality alerts; the trigger below for every fact_maintenance insert), and a
-- NOTIFY on channel 'ingestor_event' that PostgreSQL delivers at commit to every listening API process, so an
-- API process sees the events of every daemon writing into the same database.  A client that lost its
-- connection asks for the rows after the last id it received (since=): the table is the replay buffer, kept
-- for events.retention (prune_api_events()).

-- @tier: all

-- Every timestamp of an event (the envelope's and those inside data) in one format: UTC, milliseconds, 'Z'.
-- Not to_jsonb(timestamptz): that renders the session's time zone, so two connections would disagree.
CREATE FUNCTION api_time(moment timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE SEQUENCE api_event_event_id_seq AS bigint;

-- event_id is handed out by the trigger api_event_order below, never by a default: see there.
-- dedupe_key: events that must exist once (a stop's start and end, a shift's scrap alert, a maintenance
-- record) carry a key naming what they are about, so a restart that re-reads the same readings, or two
-- processes reporting the same finding, emit them once (ON CONFLICT DO NOTHING in emit_event).
CREATE TABLE api_event (
    event_id      BIGINT       NOT NULL PRIMARY KEY,
    event_type    VARCHAR(20)  NOT NULL,
    event_time    TIMESTAMPTZ  NOT NULL,
    equipment_id  INTEGER      REFERENCES dim_equipment (equipment_id),
    data          JSONB        NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key    TEXT         CONSTRAINT api_event_dedupe_key UNIQUE,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT chk_api_event_type CHECK (event_type IN ('production', 'downtime', 'quality_alert', 'maintenance'))
);
ALTER SEQUENCE api_event_event_id_seq OWNED BY api_event.event_id;
CREATE INDEX idx_api_event_created ON api_event (created_at);
-- The daemon looks up the latest quality alert to tell whether check_data_quality()'s findings changed.
CREATE INDEX idx_api_event_quality_alert ON api_event (event_id) WHERE event_type = 'quality_alert';
COMMENT ON TABLE api_event IS
    'live events of the API (WS /api/events), kept for events.retention so a client can resume with since= (ingestor)';
COMMENT ON COLUMN api_event.event_time IS 'when what the event reports happened (the envelope''s timestamp)';
COMMENT ON COLUMN api_event.equipment_id IS 'NULL for an event about the whole plant (a data-quality finding)';

-- How far the retention has deleted: every event with event_id <= pruned_through is gone.  A client resuming
-- from an older id may have missed events, and is told so instead of silently getting a gap.
CREATE TABLE api_event_retention (
    singleton       BOOLEAN      PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through  BIGINT       NOT NULL DEFAULT 0,
    pruned_at       TIMESTAMPTZ
);
INSERT INTO api_event_retention DEFAULT VALUES;

-- The envelope of an event as the API sends it, built here once so that the NOTIFY payload, a replay from the
-- table and the REST listing are the same bytes (row_to_json: compact, keys in this order).
CREATE FUNCTION api_event_json(e api_event) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT row_to_json(envelope) FROM (
        SELECT e.event_id                 AS "id",
               e.event_type               AS "type",
               api_time(e.event_time)     AS "timestamp",
               e.equipment_id             AS "equipmentId",
               (SELECT d.equipment_code FROM dim_equipment d WHERE d.equipment_id = e.equipment_id)
                                          AS "equipmentCode",
               e.data                     AS "data"
    ) envelope
$$;

-- Ids in commit order.  A client resuming with since=N must get every event committed after the one it saw
-- last.  Sequence values are handed out at insert, not at commit: with two transactions emitting at once, the
-- one holding the lower id could commit after a client was sent the higher one, and since= would skip it for
-- ever.  So each emitting transaction takes one transaction-level advisory lock *before* drawing its id and
-- holds it to its commit: ids are drawn, and events committed, one transaction at a time.  The id is assigned
-- here rather than by a column default because defaults are evaluated before BEFORE triggers run.
-- The cost: emitting transactions are serialised, and a transaction that emits holds the lock until it ends,
-- so emit last and commit soon.  Events are rare (a few per machine and minute); the daemon emits in short
-- transactions of their own; a bulk insert into fact_maintenance holds the lock for its duration.
CREATE FUNCTION api_event_order() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4996257039338394180);  -- 0x4556_454E_544F_5244, 'EVENTORD'
    NEW.event_id := nextval('api_event_event_id_seq');
    RETURN NEW;
END
$$;
CREATE TRIGGER api_event_order BEFORE INSERT ON api_event FOR EACH ROW EXECUTE FUNCTION api_event_order();

-- The NOTIFY, delivered at commit (never for a rolled-back or de-duplicated event), in commit order.  The
-- payload is the envelope when it fits in NOTIFY's 8000 bytes, else the id, type and equipment, and
-- "truncated": true, for the listener to read the row.
CREATE FUNCTION api_event_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text := api_event_json(NEW)::text;
BEGIN
    IF octet_length(payload) >= 8000 THEN
        payload := json_build_object('id', NEW.event_id, 'type', NEW.event_type, 'equipmentId', NEW.equipment_id,
                                     'truncated', true)::text;
    END IF;
    PERFORM pg_notify('ingestor_event', payload);
    RETURN NULL;
END
$$;
CREATE TRIGGER api_event_notify AFTER INSERT ON api_event FOR EACH ROW EXECUTE FUNCTION api_event_notify();

-- Emit one event; returns its id, or NULL when an event with the same dedupe_key exists already.
CREATE FUNCTION emit_event(event_type text, event_time timestamptz, equipment_id integer, data jsonb,
                           dedupe_key text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO api_event (event_type, event_time, equipment_id, data, dedupe_key)
    VALUES (event_type, event_time, equipment_id, COALESCE(data, '{}'::jsonb), dedupe_key)
    ON CONFLICT ON CONSTRAINT api_event_dedupe_key DO NOTHING
    RETURNING api_event.event_id INTO new_id;
    RETURN new_id;
END
$$;

-- Delete the events older than keep, and record how far (api_event_retention).  Deletes a prefix of ids (every
-- event up to the newest one created before the cut), so "everything after pruned_through is still here"
-- holds exactly.  Returns the number of events deleted.
CREATE FUNCTION prune_api_events(keep interval DEFAULT INTERVAL '1 day') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    through bigint;
    removed bigint;
BEGIN
    IF keep <= INTERVAL '0' THEN
        RAISE EXCEPTION 'prune_api_events: keep must be positive, got %', keep;
    END IF;
    SELECT max(e.event_id) INTO through FROM api_event e WHERE e.created_at < now() - keep;
    IF through IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM api_event e WHERE e.event_id <= through;
    GET DIAGNOSTICS removed = ROW_COUNT;
    UPDATE api_event_retention SET pruned_through = GREATEST(pruned_through, through), pruned_at = now();
    RETURN removed;
END
$$;

-- A maintenance record written, by any path (the API, an import, plain SQL): one 'maintenance' event.
CREATE FUNCTION maintenance_emit_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM emit_event('maintenance', NEW.created_at, NEW.equipment_id, jsonb_build_object(
        'maintenanceId', NEW.maintenance_id,
        'workOrderNumber', NEW.work_order_number,
        'maintenanceType', NEW.maintenance_type,
        'startTime', api_time(NEW.start_time),
        'endTime', api_time(NEW.end_time),
        'laborHours', NEW.labor_hours,
        'materialCost', NEW.material_cost,
        'description', NEW.description), 'maintenance:' || NEW.maintenance_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER fact_maintenance_event AFTER INSERT ON fact_maintenance
    FOR EACH ROW EXECUTE FUNCTION maintenance_emit_event();

-- What each machine is doing now, as the daemon's live task last saw it in the committed state readings:
-- running, stopped (unplanned), planned_stop, or unknown (no state reading yet).  since: when that state began;
-- state_value: the PLC value; reason_id: the stop's reason as far as known (NULL while running).  The plant
-- tree of the API reads it; a machine without a state tag has no row.
CREATE TABLE live_equipment_state (
    equipment_id  INTEGER          PRIMARY KEY REFERENCES dim_equipment (equipment_id),
    state         VARCHAR(20)      NOT NULL,
    since         TIMESTAMPTZ,
    state_value   DOUBLE PRECISION,
    reason_id     INTEGER          REFERENCES dim_downtime_reason (reason_id),
    updated_at    TIMESTAMPTZ      NOT NULL DEFAULT now(),
    CONSTRAINT chk_live_state CHECK (state IN ('running', 'stopped', 'planned_stop', 'unknown'))
);
COMMENT ON TABLE live_equipment_state IS
    'per machine with a state tag: its current state from the committed readings (ingestor live events)';

-- Per daemon and set of machines (like derive_watermark): the highest fact_sensor_event.event_id the live
-- task has read.  It moves in the transaction that writes the events and states those readings gave.
CREATE TABLE live_watermark (
    scope          VARCHAR(200) PRIMARY KEY,
    instance_id    VARCHAR(100) NOT NULL,
    equipment_ids  INTEGER[]    NOT NULL,
    last_event_id  BIGINT       NOT NULL,
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now()
);
COMMENT ON TABLE live_watermark IS
    'per daemon instance and machine set: the last fact_sensor_event.event_id the live events task has read';
