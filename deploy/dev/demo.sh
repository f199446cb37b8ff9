#!/usr/bin/env bash
# The demo, from a clean clone on Debian: install into .venv, provision and start TimescaleDB on
# 127.0.0.1:5433, create the `ingestor` database, apply the schema, start the protocol simulators that exist,
# and run the daemon in the foreground.  Ctrl-C stops everything.
#
#   deploy/dev/demo.sh                       # the built-in signal generator (config/generate-demo.yaml)
#   deploy/dev/demo.sh config/other.yaml     # another configuration against the same database
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=${1:-config/generate-demo.yaml}

deploy/dev/setup.sh
export INGESTOR_DATABASE_URL
INGESTOR_DATABASE_URL=$(deploy/dev/timescaledb.sh createdb ingestor)
.venv/bin/ingestor check-config "$CONFIG"
.venv/bin/ingestor schema apply

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# Simulators join here as their connectors land (OPC UA, Modbus, MQTT).

cat <<MSG

  Demo running.  In another terminal:
    curl -s 127.0.0.1:9108/readyz
    curl -s 127.0.0.1:9108/metrics | grep ^ingestor_
    deploy/dev/timescaledb.sh psql ingestor -c 'select * from fact_sensor_event order by event_ts desc limit 10'
  Ctrl-C stops the demo (the database keeps its data; deploy/dev/timescaledb.sh stop stops it).

MSG
.venv/bin/ingestor run -c "$CONFIG"
