#!/usr/bin/env bash
# The test suite, from a clean clone: install into .venv, start the project's TimescaleDB (127.0.0.1:5433),
# check the machine's PostgreSQL (127.0.0.1:5432) and Mosquitto (127.0.0.1:1883), run pytest.
# Extra arguments go to pytest (deploy/dev/test.sh -k config).  pytest exits non-zero when no test ran.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/dev/setup.sh
deploy/dev/timescaledb.sh start >/dev/null
.venv/bin/python - <<'PY'
import socket, sys
for name, port in (("PostgreSQL", 5432), ("TimescaleDB", 5433), ("Mosquitto", 1883)):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as exc:
        sys.exit(f"test.sh: {name} on 127.0.0.1:{port} is not reachable: {exc}")
PY
exec .venv/bin/python -m pytest "$@"
