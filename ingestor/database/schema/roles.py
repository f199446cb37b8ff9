"""Least privilege: an owner that applies migrations, a writer for the daemon, a reader for the API and dashboards.

The three are ``NOLOGIN`` group roles; a DBA grants them to login users (``GRANT ingestor_writer TO plant_daemon``).

* the **owner** owns every table, view and function of the schema (so it can apply later migrations);
* the **writer** may read and write rows (COPY, INSERT, UPDATE, DELETE, sequences) and refresh the materialized
  views through ``ingestor_refresh_view()`` (migration 0010, SECURITY DEFINER): no DDL, no TRUNCATE, no
  ownership;
* the **reader** may SELECT, nothing else.

:func:`roles_sql` is the whole script (``ingestor schema roles --print`` prints it for a DBA); running it again
changes nothing.  Default privileges make the tables and views later migrations create (as the owner role, or as
the role running the script) get the same grants; re-running ``ingestor schema apply --roles`` after an upgrade
also hands new objects to the owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ingestor.database.schema.errors import SchemaError


@dataclass(frozen=True)
class RoleNames:
    owner: str = "ingestor_owner"
    writer: str = "ingestor_writer"
    reader: str = "ingestor_reader"

    def __post_init__(self) -> None:
        names = (self.owner, self.writer, self.reader)
        for name in names:
            if not name or not name.replace("_", "a").isalnum() or not name.isascii() or name[0].isdigit():
                raise ValueError(f"role name {name!r}: use letters, digits and underscores")
        if len(set(names)) != 3:
            raise ValueError("the owner, writer and reader roles need three different names")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def roles_sql(names: RoleNames, schema: str = "public", *, applier: str | None = None) -> str:
    """The SQL that creates the three roles (when missing) and grants them their rights in ``schema`` of the
    current database.  ``applier``: the role that created the objects so far (its future objects get the same
    default privileges as the owner's)."""
    owner, writer, reader, sch = _ident(names.owner), _ident(names.writer), _ident(names.reader), _ident(schema)
    lines = [f"-- ingestor roles in schema {schema}: owner {names.owner}, writer {names.writer}, "
             f"reader {names.reader}"]
    for name in (names.owner, names.writer, names.reader):
        literal = name.replace("'", "''")
        lines.append(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{literal}') THEN "
                     f"CREATE ROLE {_ident(name)} NOLOGIN; END IF; END $$;")
    lines += [
        "-- the owner owns the schema's objects (extension members excepted) and may create more",
        f"GRANT USAGE, CREATE ON SCHEMA {sch} TO {owner};",
        _OWNERSHIP.replace("@SCHEMA@", schema.replace("'", "''")).replace("@OWNER@", owner),
        "-- the writer: rows and sequences, refreshing the views; no DDL (no CREATE on the schema, no ownership)",
        f"GRANT USAGE ON SCHEMA {sch} TO {writer}, {reader};",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {sch} TO {writer};",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {sch} TO {writer};",
        f"GRANT EXECUTE ON FUNCTION {sch}.ingestor_refresh_view(text) TO {writer};",
        "-- the reader: SELECT only",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {sch} TO {reader};",
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {sch} TO {reader};",
        f"REVOKE CREATE ON SCHEMA {sch} FROM PUBLIC;",
        "-- what later migrations create gets the same grants",
    ]
    creators = [owner] + ([_ident(applier)] if applier and applier != names.owner else [])
    for creator in creators:
        lines += [
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA {sch} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer};",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA {sch} "
            f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {writer};",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA {sch} GRANT SELECT ON TABLES TO {reader};",
        ]
    return "\n".join(lines) + "\n"


# Tables, views, materialized views (continuous aggregates included), free-standing sequences and functions of
# the schema, except what an extension owns (TimescaleDB puts functions such as time_bucket() in public).
_OWNERSHIP = """DO $$
DECLARE
    item  record;
    caggs text[] := '{}';
BEGIN
    -- TimescaleDB's continuous aggregates are views in pg_class, altered with ALTER MATERIALIZED VIEW
    IF to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL THEN
        EXECUTE 'SELECT coalesce(array_agg(user_view_name::text), ''{}'') FROM _timescaledb_catalog.continuous_agg '
                'WHERE user_view_schema = $1' INTO caggs USING '@SCHEMA@';
    END IF;
    FOR item IN
        SELECT c.oid, c.relkind, c.relname, format('%I.%I', n.nspname, c.relname) AS name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = '@SCHEMA@' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND c.relowner <> '@OWNER@'::regrole
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.deptype IN ('e', 'a', 'i'))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO @OWNER@',
                       CASE WHEN item.relname::text = ANY (caggs) THEN 'MATERIALIZED VIEW'
                            ELSE CASE item.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                         WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END END, item.name);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure AS name, p.prokind FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = '@SCHEMA@' AND p.proowner <> '@OWNER@'::regrole AND p.prokind IN ('f', 'p')
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                           AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO @OWNER@',
                       CASE item.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, item.name);
    END LOOP;
END $$;"""


async def apply_roles(conn: asyncpg.Connection, names: RoleNames) -> str:
    """Create and grant the roles in the connection's current schema, in one transaction; the SQL it ran."""
    schema = await conn.fetchval("SELECT current_schema()")
    applier = await conn.fetchval("SELECT current_user")
    if not await conn.fetchval("SELECT to_regprocedure('ingestor_refresh_view(text)') IS NOT NULL"):
        raise SchemaError("the schema is not applied (ingestor_refresh_view() is missing): run 'ingestor schema "
                          "apply' first")
    sql = roles_sql(names, schema, applier=applier)
    try:
        async with conn.transaction():
            await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise SchemaError(f"granting the roles failed: {type(exc).__name__}: {exc} (creating roles needs "
                          "CREATEROLE, handing objects to the owner needs membership in it; or give "
                          "'ingestor schema roles --print' to a DBA)") from exc
    return sql
