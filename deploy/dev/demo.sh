#!/usr/bin/env bash
# The demo, from a clean clone on Debian (as root): install into .venv, provision and start TimescaleDB on
# 127.0.0.1:5433, make sure an MQTT broker listens on 127.0.0.1:1883, create the `ingestor` database, apply
# the schema, start the OPC UA, Modbus and MQTT simulators, and run the daemon in the foreground.
# Ctrl-C stops the daemon and the simulators.
#
#   deploy/dev/demo.sh                              # three press lines over OPC UA, Modbus and MQTT (config/demo.yaml)
#   deploy/dev/demo.sh config/opcua-simulator.yaml  # one of the per-protocol examples instead
#   deploy/dev/demo.sh config/modbus-rtu.yaml       # Modbus RTU on a pseudo-terminal line and through a gateway
#   deploy/dev/demo.sh config/mqtt-sparkplug.yaml   # a Sparkplug B edge node
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=${1:-config/demo.yaml}
PY=.venv/bin/python

deploy/dev/setup.sh
export INGESTOR_DATABASE_URL
INGESTOR_DATABASE_URL=$(deploy/dev/timescaledb.sh createdb ingestor)

listening() { "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$1" 2>/dev/null; }

LOGS=$(mktemp -d /tmp/ingestor-demo.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if ! listening 1883; then
    if ! command -v mosquitto >/dev/null; then
        echo "demo.sh: installing mosquitto (the MQTT broker)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null
    fi
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$LOGS/mosquitto.conf"
    mosquitto -c "$LOGS/mosquitto.conf" >"$LOGS/mosquitto.log" 2>&1 &
    pids+=($!)
fi

.venv/bin/ingestor check-config "$CONFIG"
.venv/bin/ingestor schema apply

# The demo plant's records (config/records/): a machine from a legacy register, CMMS work orders, scrap from a
# quality station and an MES.  A second run imports nothing again (natural keys); docs/records.md.
if [ "$CONFIG" = config/demo.yaml ]; then
    for record in equipment:legacy-equipment.csv maintenance:maintenance-export.csv scrap:scrap-records.csv \
                  scrap:scrap-mes.jsonl; do
        .venv/bin/ingestor import "${record%%:*}" "config/records/${record#*:}" -c "$CONFIG" >>"$LOGS/records.log" 2>&1 \
            || { echo "demo.sh: importing config/records/${record#*:} failed; see $LOGS/records.log" >&2; exit 1; }
    done
fi

# The simulators: three presses each.  With config/demo.yaml the MQTT publisher plays presses 7-9 of line 3.
mqtt_args=()
[ "$CONFIG" = config/demo.yaml ] && mqtt_args=(--first-machine 7 --prefix demo/LINE-3)
[ "$CONFIG" = config/mqtt-sparkplug.yaml ] && mqtt_args=(--sparkplug)   # a Sparkplug B edge node instead
"$PY" -m simulators.opcua >"$LOGS/opcua.log" 2>&1 & pids+=($!)
"$PY" -m simulators.modbus >"$LOGS/modbus.log" 2>&1 & pids+=($!)
"$PY" -m simulators.mqtt "${mqtt_args[@]}" >"$LOGS/mqtt.log" 2>&1 & pids+=($!)
if [ "$CONFIG" = config/modbus-rtu.yaml ]; then  # an RS-485 line on a pseudo-terminal and an RTU-over-TCP gateway
    "$PY" -m simulators.modbus --transport rtu --serial-link /tmp/ingestor-modbus-rtu >"$LOGS/modbus-rtu.log" 2>&1 & pids+=($!)
    "$PY" -m simulators.modbus --transport rtu-over-tcp --port 5021 >"$LOGS/modbus-gateway.log" 2>&1 & pids+=($!)
    for _ in $(seq 100); do [ -e /tmp/ingestor-modbus-rtu ] && listening 5021 && break; sleep 0.2; done
fi
# The daemon starts once the OPC UA (4840) and Modbus (5020) simulators listen, so its first lines are not
# connection errors.
for port in 4840 5020; do
    for _ in $(seq 100); do listening "$port" && break; sleep 0.2; done
    listening "$port" || { echo "demo.sh: no simulator listens on 127.0.0.1:$port; see $LOGS" >&2; exit 1; }
done

port=$(.venv/bin/python -c "import sys; from ingestor.config import load_config; print(load_config(sys.argv[1]).http.port)" "$CONFIG")
cat <<MSG

  Demo running (simulator logs and the records import in $LOGS).  The operator page is http://127.0.0.1:$port/ ; in another terminal:
    curl -s 127.0.0.1:$port/readyz
    curl -s 127.0.0.1:$port/metrics | grep ^ingestor_
    deploy/dev/timescaledb.sh psql ingestor -c 'select * from fact_sensor_event order by event_ts desc limit 10'
  Ctrl-C stops the demo (the database keeps its data; deploy/dev/timescaledb.sh stop stops it).

MSG
# The daemon runs in a session of its own, and this script passes it exactly one SIGTERM on Ctrl-C or when it
# is itself told to stop, so the daemon drains gracefully before the simulators are stopped.
setsid .venv/bin/ingestor run -c "$CONFIG" &
daemon=$!
stopping=
trap '[ -n "$stopping" ] || { stopping=1; kill -TERM "$daemon" 2>/dev/null || true; }' INT TERM
status=0
wait "$daemon" || status=$?
while kill -0 "$daemon" 2>/dev/null; do wait "$daemon" || status=$?; done
exit "$status"
