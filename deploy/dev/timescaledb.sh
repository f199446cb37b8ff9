#!/usr/bin/env bash
# Provision and run a private TimescaleDB (Apache edition) on a loopback port, for tests, the demo and CI.
#
# TimescaleDB is not packaged for this host's Debian release, but the next release ships
# postgresql-17 with postgresql-17-timescaledb.  We debootstrap a minimal root with those two packages
# once (about 700 MB, cached outside the clone), then run initdb/pg_ctl inside it with chroot as the
# postgres user.  No bind mounts are made, so the root can be deleted safely with `rm -rf`.
#
# Usage: deploy/dev/timescaledb.sh start|stop|status|dsn [NAME]|createdb NAME|psql NAME [ARGS]|destroy
# Environment:
#   INGESTOR_TSDB_ROOT   where the root lives   (default /var/cache/ingestor/tsdb-root)
#   INGESTOR_TSDB_PORT   loopback port           (default 5433)
#   INGESTOR_TSDB_SUITE  Debian suite to fetch   (default trixie)
#   INGESTOR_APT_MIRROR  Debian mirror           (default: read from this machine's apt sources)
set -euo pipefail

ROOT=${INGESTOR_TSDB_ROOT:-/var/cache/ingestor/tsdb-root}
PORT=${INGESTOR_TSDB_PORT:-5433}
SUITE=${INGESTOR_TSDB_SUITE:-trixie}
PGVER=17
PGBIN=/usr/lib/postgresql/$PGVER/bin
DATA=/var/lib/ingestor-tsdb/data          # path inside the root
LOG=/var/lib/ingestor-tsdb/server.log     # path inside the root

DEBIAN_ROOT_PROG=timescaledb.sh
# shellcheck source=deploy/dev/debian-root.sh
. "$(dirname "$0")/debian-root.sh"
log() { debian_root_log "$@"; }

in_root() { # run a command in the root as the postgres user
    chroot --userspec=postgres:postgres "$ROOT" env -i HOME=/var/lib/postgresql LANG=C.UTF-8 \
        PATH="$PGBIN:/usr/bin:/bin" "$@"
}

provision() {
    bootstrap_root "$ROOT" "$SUITE" "postgresql-$PGVER,postgresql-$PGVER-timescaledb" || exit 1
}

init_cluster() {
    if [ -f "$ROOT$DATA/PG_VERSION" ]; then return; fi
    mkdir -p "$ROOT$DATA" "$ROOT/var/run/postgresql"
    chroot "$ROOT" chown -R postgres:postgres /var/lib/ingestor-tsdb /var/run/postgresql
    chmod 700 "$ROOT$DATA"
    in_root initdb -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$ROOT$DATA/postgresql.conf" <<CONF
# ingestor dev/test instance
listen_addresses = '127.0.0.1'
port = $PORT
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
unix_socket_directories = '/var/run/postgresql'
max_connections = 200
shared_buffers = 256MB
fsync = on
CONF
    echo "host all all 127.0.0.1/32 trust" >>"$ROOT$DATA/pg_hba.conf"
}

running() { in_root pg_ctl -D "$DATA" status >/dev/null 2>&1; }

start() {
    provision
    init_cluster
    if running; then log "already running on 127.0.0.1:$PORT"; return; fi
    mkdir -p "$ROOT/var/run/postgresql"; chroot "$ROOT" chown postgres:postgres /var/run/postgresql
    in_root pg_ctl -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
        || { log "server did not start"; tail -n 30 "$ROOT$LOG" >&2; exit 1; }
    log "running on 127.0.0.1:$PORT ($(in_root psql -h 127.0.0.1 -p "$PORT" -U postgres -Atc \
        "select 'PostgreSQL ' || current_setting('server_version') || ', TimescaleDB ' || default_version
         from pg_available_extensions where name = 'timescaledb'" 2>/dev/null))"
}

stop() {
    if [ -f "$ROOT$DATA/PG_VERSION" ] && running; then in_root pg_ctl -D "$DATA" -m fast -w stop >/dev/null; fi
}

case "${1:-start}" in
    start) start; echo "postgresql://postgres@127.0.0.1:$PORT/postgres" ;;
    stop) stop ;;
    status) if [ -f "$ROOT$DATA/PG_VERSION" ] && running; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 3; fi ;;
    dsn) echo "postgresql://postgres@127.0.0.1:$PORT/${2:-postgres}" ;;
    createdb)
        [ -n "${2:-}" ] || { echo "usage: $0 createdb NAME" >&2; exit 2; }
        start >/dev/null
        if [ -z "$(in_root psql -h 127.0.0.1 -p "$PORT" -U postgres -Atc "select 1 from pg_database where datname = '$2'")" ]; then
            in_root createdb -h 127.0.0.1 -p "$PORT" -U postgres "$2"
        fi
        echo "postgresql://postgres@127.0.0.1:$PORT/$2" ;;
    psql) # psql inside the root: deploy/dev/timescaledb.sh psql DBNAME [psql arguments]
        shift; db=${1:-postgres}; shift || true
        chroot --userspec=postgres:postgres "$ROOT" env -i HOME=/var/lib/postgresql LANG=C.UTF-8 \
            PATH="$PGBIN:/usr/bin:/bin" TERM="${TERM:-dumb}" psql -h 127.0.0.1 -p "$PORT" -U postgres "$db" "$@" ;;
    destroy)
        stop
        safe_rm_root "$ROOT" || exit 1 ;;
    *) echo "usage: $0 start|stop|status|dsn [NAME]|createdb NAME|psql NAME [ARGS]|destroy" >&2; exit 2 ;;
esac
