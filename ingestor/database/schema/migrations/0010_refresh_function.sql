-- Refreshing a materialized view without owning it (docs/schema.md "Roles").
--
-- REFRESH MATERIALIZED VIEW needs the view's ownership, and ownership also allows DROP and ALTER: the
-- daemon's writer role must not have that.  This function runs with its owner's rights (the role that applied
-- the migrations, the owner role of `ingestor schema apply --roles`) and refreshes one of the views the daemon
-- refreshes on its schedule, nothing else: the name is checked against the list, the view is looked up in the
-- schema the function was created in (never pg_temp), and it is CONCURRENTLY once the view has been populated.
-- Only its owner may call it until `ingestor schema apply --roles` grants EXECUTE to the writer role.

-- @tier: all

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

REVOKE ALL ON FUNCTION ingestor_refresh_view(text) FROM PUBLIC;
