#!/usr/bin/env bash
# Create .venv (if needed) and install the project with its test tools into it.  Idempotent; takes seconds
# when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup.sh: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "setup.sh: installing python3-venv" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
        fi
        "$PYTHON" -m venv .venv
    fi
fi
# The operator page's browser test drives Debian's Chromium through its ChromeDriver (tests/test_operator_page.py).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup.sh: installing chromium and chromium-driver (the operator page's browser test)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
    else
        echo "setup.sh: chromium and chromium-driver are missing; install them (apt-get install chromium chromium-driver)" >&2
    fi
fi
# The independent OPC UA server some tests run against (node-opcua, tests/peers/, from its lock file).
if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup.sh: installing nodejs and npm (the tests' node-opcua server)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null; }
    else
        echo "setup.sh: npm is missing; install nodejs and npm for the tests against node-opcua" >&2
    fi
fi
if command -v npm >/dev/null && { [ ! -f tests/peers/node_modules/.package-lock.json ] \
        || [ tests/peers/package-lock.json -nt tests/peers/node_modules/.package-lock.json ]; }; then
    (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v -E "^WARNING: Location '.*' is ignored" >&2 || true
# fails loudly if the install did not work, or did not register the connector types (entry points)
.venv/bin/python -c 'from ingestor.config.registry import connector_types; import sys; sys.exit(not {"opcua", "modbus", "mqtt", "generate"} <= set(connector_types()))'
