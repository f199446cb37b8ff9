#!/usr/bin/env bash
# Production install of the ingestor daemon on Debian (12 or later), as root.  Run it again to upgrade or to
# repair modes and ownership: a second run with the same inputs changes nothing.
#
#   deploy/debian/install.sh [--wheel FILE] [--wheelhouse DIR] [--config FILE]
#
#   --wheel FILE      install this prebuilt wheel (default: build one from the source tree this script is in)
#   --wheelhouse DIR  install offline: the wheel's dependencies (and setuptools, to build) come from DIR only
#                     (`pip download -d DIR shopfloor_ingestor-*.whl setuptools` on a machine with an index)
#   --config FILE     install FILE as /etc/ingestor/config.yaml (replacing the one there, which is kept as
#                     config.yaml.previous); without it an existing config.yaml is never touched, and a missing
#                     one is created from config/generate-demo.yaml for you to edit
#
# What it makes (docs/install.md says why each is so):
#   /opt/ingestor/venv                  the daemon in its own venv, root-owned (the service cannot modify it)
#   user and group `ingestor`           a system account without a shell or a home of its own
#   /etc/ingestor/        root:ingestor 0750   config.yaml root:ingestor 0640 (the daemon reads it, never writes)
#   /etc/ingestor/env     root 0600            INGESTOR_DATABASE_URL=... for systemd's EnvironmentFile=
#   /etc/ingestor/credentials/  root 0700      pgpass, api-tokens (0600): systemd hands them to the service
#                                              with LoadCredential=, nobody else reads them
#   /var/lib/ingestor/    ingestor 0750        the state directory; spool/ and pki/ (OPC UA certificates) 0700
#   /etc/systemd/system/ingestor.service       deploy/systemd/ingestor.service; daemon-reload when systemd runs
#
# pip uses this machine's own configuration (/etc/pip.conf, PIP_* variables): this script names no index.
set -euo pipefail
umask 022

PROG=install.sh
PREFIX=/opt/ingestor
VENV=$PREFIX/venv
ETC=/etc/ingestor
STATE=/var/lib/ingestor
UNIT_DIR=/etc/systemd/system
SRC=$(cd "$(dirname "$0")/../.." && pwd)

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$PROG" "$*"; }
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

WHEEL= WHEELHOUSE= CONFIG=
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) [ $# -ge 2 ] || usage; WHEEL=$2; shift 2 ;;
        --wheelhouse) [ $# -ge 2 ] || usage; WHEELHOUSE=$2; shift 2 ;;
        --config) [ $# -ge 2 ] || usage; CONFIG=$2; shift 2 ;;
        -h|--help) usage ;;
        *) printf '%s: unknown argument %s\n' "$PROG" "$1" >&2; usage ;;
    esac
done

[ "$(id -u)" = 0 ] || die "must be run as root (it creates a system user, /etc/ingestor and /opt/ingestor): sudo $0 $*"
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "no wheel at $WHEEL"
[ -z "$WHEELHOUSE" ] || [ -d "$WHEELHOUSE" ] || die "no wheelhouse directory at $WHEELHOUSE"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "no configuration file at $CONFIG"
command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 -c 'import platform; print(platform.python_version())'); the daemon needs 3.11 or later"
python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3's venv module is missing: apt-get install python3-venv"
for tool in useradd groupadd getent install; do command -v "$tool" >/dev/null || die "$tool is missing (package passwd)"; done

pip_index=()   # empty: this machine's pip configuration decides where packages come from
if [ -n "$WHEELHOUSE" ]; then pip_index=(--no-index --find-links "$(cd "$WHEELHOUSE" && pwd)"); fi

# The venv: kept across runs, made again when its interpreter is gone (a Debian upgrade replaced python3).
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null \
   && [ "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])')" = "$(python3 -c 'import sys; print(sys.version_info[:2])')" ]; then
    say "reusing $VENV"
else
    say "creating $VENV"
    rm -rf "$VENV"
    install -d -m 0755 -o root -g root "$PREFIX"
    python3 -m venv "$VENV"
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
if [ -z "$WHEEL" ]; then
    [ -f "$SRC/pyproject.toml" ] || die "no --wheel given and no source tree at $SRC"
    say "building the wheel from $SRC"
    cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/ingestor" "$SRC/connectors" "$build/"
    mkdir "$build/wheel"
    (cd "$build" && "$VENV/bin/pip" wheel --quiet --no-deps "${pip_index[@]}" --wheel-dir "$build/wheel" .) \
        || die "building the wheel failed"
    WHEEL=$(ls "$build"/wheel/*.whl)
fi
say "installing $(basename "$WHEEL") into $VENV"
"$VENV/bin/pip" install --quiet "${pip_index[@]}" "$WHEEL" || die "pip could not install $WHEEL"
# The same version again (a rebuilt wheel): replace the package itself, leave its dependencies be.
"$VENV/bin/pip" install --quiet --no-deps --force-reinstall "${pip_index[@]}" "$WHEEL" >/dev/null
"$VENV/bin/ingestor" --help >/dev/null || die "the installed ingestor does not start"
install -m 0644 -o root -g root "$SRC/README.md" "$PREFIX/README.md"

# The account: a system user with its own group, no shell, its home the state directory.
getent group ingestor >/dev/null || groupadd --system ingestor
if ! getent passwd ingestor >/dev/null; then
    useradd --system --gid ingestor --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
        --comment "shop-floor ingestor" ingestor
    say "created the system user ingestor"
fi

# Configuration: the daemon reads it and cannot change it; secrets are root's, handed over by systemd.
install -d -m 0750 -o root -g ingestor "$ETC"
install -d -m 0700 -o root -g root "$ETC/credentials"
if [ -n "$CONFIG" ]; then
    if [ -f "$ETC/config.yaml" ] && ! cmp -s "$CONFIG" "$ETC/config.yaml"; then
        cp -p "$ETC/config.yaml" "$ETC/config.yaml.previous"
    fi
    install -m 0640 -o root -g ingestor "$CONFIG" "$ETC/config.yaml"
elif [ ! -f "$ETC/config.yaml" ]; then
    install -m 0640 -o root -g ingestor "$SRC/config/generate-demo.yaml" "$ETC/config.yaml"
    say "created $ETC/config.yaml from config/generate-demo.yaml: edit it for your plant"
fi
chown root:ingestor "$ETC/config.yaml"; chmod 0640 "$ETC/config.yaml"
if [ ! -f "$ETC/env" ]; then
    install -m 0600 -o root -g root /dev/null "$ETC/env"
    cat >"$ETC/env" <<'ENV'
# Environment of the ingestor service (systemd EnvironmentFile=), root-only.  Keep the password out of the URL:
# put it in /etc/ingestor/credentials/pgpass (host:port:database:user:password), which the service reads
# through PGPASSFILE.
#INGESTOR_DATABASE_URL=postgresql://ingestor@db-host:5432/ingestor
ENV
fi
chown root:root "$ETC/env"; chmod 0600 "$ETC/env"
find "$ETC/credentials" -mindepth 1 -maxdepth 1 -type f -exec chown root:root {} + -exec chmod 0600 {} +

# State: the spool and the OPC UA certificates, the service's alone.
install -d -m 0750 -o ingestor -g ingestor "$STATE"
install -d -m 0700 -o ingestor -g ingestor "$STATE/spool" "$STATE/pki"
chown -R ingestor:ingestor "$STATE"   # files kept by an uninstall belong to the account made again here

install -m 0644 -o root -g root "$SRC/deploy/systemd/ingestor.service" "$UNIT_DIR/ingestor.service"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "installed $UNIT_DIR/ingestor.service (systemd reloaded)"
else
    say "installed $UNIT_DIR/ingestor.service (systemd is not running here: no daemon-reload)"
fi

say "done. Next: edit $ETC/config.yaml and $ETC/env, then"
say "  runuser -u ingestor -- $VENV/bin/ingestor check-config $ETC/config.yaml"
say "  systemctl enable --now ingestor && journalctl -u ingestor -f"
