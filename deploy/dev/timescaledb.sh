#!/usr/bin/env bash
# Provision and run a private TimescaleDB on a loopback port, for tests, the demo and CI.
#
# TimescaleDB is not packaged for this host's Debian release, but the next release ships
# postgresql-17 with postgresql-17-timescaledb.  We debootstrap a minimal root with those two packages
# once (about 700 MB, cached outside the clone), then run initdb/pg_ctl inside it with chroot as the
# postgres user.  No bind mounts are made, so the root can be deleted safely with `rm -rf`.
#
# That package is the Apache edition (Debian strips the Timescale-licensed code).  The full edition
# (compression, continuous aggregates, policies) is built from a TimescaleDB source tarball that the user
# provides (`--source FILE` or INGESTOR_TSDB_SOURCE; the project never ships that source): a copy of the
# Apache root gets the build tools, the tarball is built and installed in it (about two minutes on two
# cores), and the result is cached in a root of its own with its own port (5434), started with
# timescaledb.license = 'timescale'.  Later runs only start it; a different tarball rebuilds it.
#
# Usage: deploy/dev/timescaledb.sh [--full] [--source FILE] start|stop|status|dsn [NAME]|createdb NAME|psql NAME [ARGS]|destroy
#   --full          the full-edition instance (port 5434) instead of the Apache one (port 5433)
#   --source FILE   the TimescaleDB source tarball (.tar.gz) to build the full edition from; implies --full
# Environment:
#   INGESTOR_TSDB_ROOT       where the Apache root lives   (default /var/cache/ingestor/tsdb-root)
#   INGESTOR_TSDB_PORT       its loopback port             (default 5433)
#   INGESTOR_TSDB_SOURCE     the source tarball for --full (same as --source)
#   INGESTOR_TSDB_FULL_ROOT  where the full root lives     (default /var/cache/ingestor/tsdb-full-root)
#   INGESTOR_TSDB_FULL_PORT  its loopback port             (default 5434)
#   INGESTOR_TSDB_SUITE      Debian suite to fetch         (default trixie)
#   INGESTOR_APT_MIRROR      Debian mirror                 (default: read from this machine's apt sources)
set -euo pipefail

FULL=0
SOURCE=${INGESTOR_TSDB_SOURCE:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --full) FULL=1; shift ;;
        --source) [ -n "${2:-}" ] || { echo "timescaledb.sh: --source needs a file" >&2; exit 2; }
                  SOURCE=$2; FULL=1; shift 2 ;;
        --source=*) SOURCE=${1#--source=}; FULL=1; shift ;;
        *) break ;;
    esac
done

APACHE_ROOT=${INGESTOR_TSDB_ROOT:-/var/cache/ingestor/tsdb-root}
if [ "$FULL" = 1 ]; then
    ROOT=${INGESTOR_TSDB_FULL_ROOT:-/var/cache/ingestor/tsdb-full-root}
    PORT=${INGESTOR_TSDB_FULL_PORT:-5434}
    EDITION=full
else
    ROOT=$APACHE_ROOT
    PORT=${INGESTOR_TSDB_PORT:-5433}
    EDITION=apache
fi
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

provision_apache() {
    bootstrap_root "$APACHE_ROOT" "$SUITE" "postgresql-$PGVER,postgresql-$PGVER-timescaledb" || exit 1
}

# The full edition: a copy of the Apache root (without its cluster), the Debian package replaced by the
# tarball built inside it.  The marker holds the tarball's SHA-256, so another tarball rebuilds the root.
provision_full() {
    local want="" have=""
    [ -f "$ROOT/.ingestor-complete" ] && have=$(cat "$ROOT/.ingestor-complete")
    if [ -z "$SOURCE" ]; then
        if [ -n "$have" ]; then return; fi
        log "the full edition is not built yet: pass --source FILE or set INGESTOR_TSDB_SOURCE to a TimescaleDB source tarball"
        exit 4
    fi
    [ -f "$SOURCE" ] || { log "source tarball $SOURCE does not exist"; exit 2; }
    want=$(sha256sum "$SOURCE" | cut -d' ' -f1)
    if [ "$have" = "$want" ]; then return; fi
    if [ "$(id -u)" != 0 ]; then log "building the full edition needs root (chroot, apt-get)"; exit 1; fi
    if [ -n "$have" ]; then
        log "$ROOT was built from another tarball; rebuilding it"
        stop
    fi
    provision_apache
    local tmp="$ROOT.partial" started=$SECONDS
    for d in "$tmp" "$ROOT"; do
        if [ -d "$d" ] && grep -q " $d" /proc/mounts; then log "$d has mounts inside; refusing to delete it"; exit 1; fi
    done
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "copying $APACHE_ROOT to $tmp (without its cluster)"
    tar -C "$APACHE_ROOT" --exclude=./var/lib/ingestor-tsdb --exclude=./.ingestor-complete --exclude="./run/postgresql/.s.PGSQL.*" --exclude="./var/run/postgresql/.s.PGSQL.*" -cf - . | tar -C "$tmp" -xf -
    local buildlog
    buildlog="$(dirname "$ROOT")/tsdb-full-build.log"
    log "installing the build tools in it (about a minute; log: $buildlog)"
    in_build() { chroot "$tmp" env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
    : >"$buildlog"
    {
        in_build apt-get update -q &&
        in_build apt-get purge -y -q "postgresql-$PGVER-timescaledb" &&
        in_build apt-get install -y -q --no-install-recommends build-essential cmake \
            "postgresql-server-dev-$PGVER" libssl-dev &&
        in_build apt-get clean
    } >>"$buildlog" 2>&1 || { log "installing the build tools failed; see $buildlog"; tail -n 20 "$buildlog" >&2; exit 1; }
    log "building $(basename "$SOURCE") (about a minute on two cores)"
    mkdir -p "$tmp/tmp/tsdb-src"
    tar -C "$tmp/tmp/tsdb-src" --strip-components=1 -xzf "$SOURCE"
    {
        in_build sh -c 'cd /tmp/tsdb-src && ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
                -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            && cd build && make -j"$(nproc)" install'
    } >>"$buildlog" 2>&1 || { log "building TimescaleDB failed; see $buildlog"; tail -n 30 "$buildlog" >&2; exit 1; }
    rm -rf "$tmp/tmp/tsdb-src"     # the source is not kept, only what it installed
    ls "$tmp/usr/lib/postgresql/$PGVER/lib/"timescaledb-tsl-*.so >/dev/null 2>&1 \
        || { log "the build installed no timescaledb-tsl library; see $buildlog"; exit 1; }
    rm -rf "$ROOT"
    mv "$tmp" "$ROOT"
    echo "$want" >"$ROOT/.ingestor-complete"
    log "built the full edition into $ROOT in $((SECONDS - started)) s"
}

provision() { if [ "$EDITION" = full ]; then provision_full; else provision_apache; fi; }

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
$( [ "$EDITION" = full ] && echo "timescaledb.license = 'timescale'" )
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
    *) echo "usage: $0 [--full] [--source FILE] start|stop|status|dsn [NAME]|createdb NAME|psql NAME [ARGS]|destroy" >&2; exit 2 ;;
esac
