-- Maintenance events for every change of a work order, events an import emits set-based, and scrap imports
-- found by their batch.  The same on every tier.  Self-contained (it replaces 0005's maintenance_emit_event()
-- and adds two triggers beside its one, and an index), so it can be renumbered when another migration lands
-- first.
--
-- 0005 emitted a 'maintenance' event for each fact_maintenance insert only: a work order edited in the CMMS
-- and imported again, or taken back out by `ingestor import undo`, changed silently.  Now every insert,
-- change and delete emits one, and data.change says which ('created', 'updated', 'deleted'; docs/api.md).
--
-- Bulk writers: an import (ingestor/records/store.py) sets the transaction-local `ingestor.bulk = on` (any
-- role may set a custom setting, no superuser needed) while it merges, so these per-row triggers stay
-- quiet, and emits the same events itself in one statement at the end of its transaction, with the batch
-- they came from.  So the event-order lock of 0005 (taken by the first event a transaction emits, held to
-- its commit) is held only for that last statement, not for the whole merge, and live events of the daemon
-- are not held up behind an import.

-- @tier: all

-- The data of a maintenance event.  batch: the import batch that wrote it (NULL: plain SQL); undo: written
-- by `ingestor import undo` taking that batch back.
CREATE FUNCTION maintenance_event_data(m fact_maintenance, change text, batch uuid, undo boolean)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'maintenanceId', m.maintenance_id,
        'workOrderNumber', m.work_order_number,
        'maintenanceType', m.maintenance_type,
        'startTime', api_time(m.start_time),
        'endTime', api_time(m.end_time),
        'laborHours', m.labor_hours,
        'materialCost', m.material_cost,
        'description', m.description,
        'change', change,
        'batchId', batch,
        'undo', undo)
$$;

CREATE OR REPLACE FUNCTION maintenance_emit_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ingestor.bulk', true) = 'on' THEN
        RETURN NULL;  -- the bulk writer emits these itself, set-based
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM emit_event('maintenance', NEW.created_at, NEW.equipment_id,
                           maintenance_event_data(NEW, 'created', NULL, false), 'maintenance:' || NEW.maintenance_id);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM emit_event('maintenance', now(), NEW.equipment_id,
                           maintenance_event_data(NEW, 'updated', NULL, false));
    ELSE
        PERFORM emit_event('maintenance', now(), OLD.equipment_id,
                           maintenance_event_data(OLD, 'deleted', NULL, false));
    END IF;
    RETURN NULL;
END
$$;

-- 0005's fact_maintenance_event (AFTER INSERT) stays; a real change, and a delete, now emit too.
CREATE TRIGGER fact_maintenance_event_update AFTER UPDATE ON fact_maintenance
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION maintenance_emit_event();
CREATE TRIGGER fact_maintenance_event_delete AFTER DELETE ON fact_maintenance
    FOR EACH ROW EXECUTE FUNCTION maintenance_emit_event();

-- A scrap import writes no audit row per inserted record (a million-row file would write a million more rows
-- and three index entries each, nearly half of its time): the records carry their batch in import_batch,
-- and `ingestor import undo` finds them by it.
CREATE INDEX idx_scrap_import_batch ON fact_scrap (import_batch) WHERE import_batch IS NOT NULL;
COMMENT ON COLUMN fact_scrap.import_batch IS
    'the import batch that last wrote the record (record_import_batch); what an undo of that batch deletes';
