#!/usr/bin/env bash
# The test suite, from a clean clone: install into .venv, start the project's TimescaleDB (127.0.0.1:5433, and
# the full edition on 127.0.0.1:5434 when a source tarball is there, see below),
# check the machine's PostgreSQL (127.0.0.1:5432) and Mosquitto (127.0.0.1:1883), run pytest.
# Extra arguments go to pytest (deploy/dev/test.sh -k config).  pytest exits non-zero when no test ran.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/dev/setup.sh
deploy/dev/timescaledb.sh start >/dev/null

# The full TimescaleDB edition (127.0.0.1:5434) is built from a source tarball that the project does not ship:
# INGESTOR_TSDB_SOURCE, else the newest timescaledb-*.tar.gz in a shared/vendor/ beside the clone (CI lays a
# copy of shared/ next to its clone) or in /work/shared/vendor/.  Built once and cached outside the clone;
# later runs only start it.  Without a tarball, an already built root is started; without either, the full
# tier is skipped and pytest says why.
find_tsdb_source() {
    if [ -n "${INGESTOR_TSDB_SOURCE:-}" ]; then echo "$INGESTOR_TSDB_SOURCE"; return; fi
    local dir found
    for dir in "$(cd .. && pwd)/shared/vendor" /work/shared/vendor; do
        found=$(ls -1 "$dir"/timescaledb-*.tar.gz 2>/dev/null | sort -V | tail -n1 || true)
        if [ -n "$found" ]; then echo "$found"; return; fi
    done
}
tsdb_source=$(find_tsdb_source)
if [ -n "$tsdb_source" ]; then
    deploy/dev/timescaledb.sh --source "$tsdb_source" start >/dev/null
    export INGESTOR_TEST_TSDB_FULL_URL=${INGESTOR_TEST_TSDB_FULL_URL:-postgresql://postgres@127.0.0.1:${INGESTOR_TSDB_FULL_PORT:-5434}/postgres}
elif deploy/dev/timescaledb.sh --full start >/dev/null 2>&1; then
    echo "test.sh: no TimescaleDB source tarball found; using the full edition built earlier" >&2
    export INGESTOR_TEST_TSDB_FULL_URL=${INGESTOR_TEST_TSDB_FULL_URL:-postgresql://postgres@127.0.0.1:${INGESTOR_TSDB_FULL_PORT:-5434}/postgres}
else
    export INGESTOR_TEST_TSDB_FULL_SKIP="no TimescaleDB source tarball (set INGESTOR_TSDB_SOURCE, or put timescaledb-*.tar.gz in $(cd .. && pwd)/shared/vendor/)"
    echo "test.sh: $INGESTOR_TEST_TSDB_FULL_SKIP: the full TimescaleDB tier is skipped" >&2
fi
.venv/bin/python - <<'PY'
import socket, sys
for name, port in (("PostgreSQL", 5432), ("TimescaleDB", 5433), ("Mosquitto", 1883)):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as exc:
        sys.exit(f"test.sh: {name} on 127.0.0.1:{port} is not reachable: {exc}")
PY
exec .venv/bin/python -m pytest "$@"
