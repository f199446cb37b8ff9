#!/usr/bin/env bash
# Pristine Debian roots to test the production install in (tests/test_install.py), as root.
#
# A minimal root with python3, python3-venv and systemd is debootstrapped once (about a minute, 300 MB) and cached
# outside the clone; every test run installs into a fresh copy of it, so nothing of an earlier run is left.
# The daemon's dependencies are fetched once, inside a scratch copy of the root (so the wheels match its
# Python), with this machine's own pip configuration copied in, into a wheelhouse kept next to the root; the
# install in the fresh copy then runs offline with `install.sh --wheelhouse`.
#
# Usage:
#   deploy/dev/install-root.sh base                  make the cached root when missing; print its path
#   deploy/dev/install-root.sh wheelhouse WHEEL      the wheelhouse for WHEEL's dependencies (made when missing
#                                                    or when the dependencies changed); print its path
#   deploy/dev/install-root.sh fresh DEST            a fresh copy of the cached root at DEST (DEST must not exist)
#   deploy/dev/install-root.sh destroy               delete the cached root and wheelhouse
# Environment:
#   INGESTOR_INSTALL_SUITE  Debian suite          (default trixie)
#   INGESTOR_INSTALL_ROOT   the cached root       (default /var/cache/ingestor/install-root-SUITE)
#   INGESTOR_APT_MIRROR     Debian mirror         (default: read from this machine's apt sources)
set -euo pipefail

SUITE=${INGESTOR_INSTALL_SUITE:-trixie}
ROOT=${INGESTOR_INSTALL_ROOT:-/var/cache/ingestor/install-root-$SUITE}
WHEELHOUSE=$ROOT.wheelhouse
DEBIAN_ROOT_PROG=install-root.sh
# shellcheck source=deploy/dev/debian-root.sh
. "$(dirname "$0")/debian-root.sh"
die() { debian_root_log "$*"; exit 1; }

# systemd is there for `systemd-analyze verify` of the installed unit inside the root, not to run; procps for
# the unit's ExecReload (/bin/kill), which every Debian install has (priority important) and minbase leaves out.
PACKAGES=python3,python3-venv,ca-certificates,systemd,procps
NEEDED=(python3 systemd-analyze kill)
base() {
    local tool
    if [ -f "$ROOT/.ingestor-complete" ]; then
        for tool in "${NEEDED[@]}"; do  # a root made by an earlier version of this script, with less in it
            if [ ! -x "$ROOT/usr/bin/$tool" ]; then
                debian_root_log "$ROOT has no $tool: making it again"; safe_rm_root "$ROOT" || exit 1; break
            fi
        done
    fi
    bootstrap_root "$ROOT" "$SUITE" "$PACKAGES" || exit 1
}

# Copy this machine's pip configuration into a root, so pip there fetches from where pip here does, with the
# certificate bundle it names (a local CA of a proxy is in the machine's bundle, not in the root's).
copy_pip_config() {
    local dest=$1 f
    for f in /etc/pip.conf /etc/xdg/pip; do
        if [ -e "$f" ]; then mkdir -p "$dest$(dirname "$f")"; cp -a "$f" "$dest$(dirname "$f")/"; fi
    done
    for f in ${PIP_CERT:-} $(sed -nE 's/^\s*cert\s*=\s*(\S+)\s*$/\1/p' /etc/pip.conf /etc/xdg/pip/pip.conf 2>/dev/null); do
        if [ -f "$f" ]; then mkdir -p "$dest$(dirname "$f")"; cp -L "$f" "$dest$f"; fi
    done
}

# The host's PIP_* variables, for `env` inside the root.
pip_environment() { env | grep -E '^PIP_[A-Z_]+=' || true; }

wheelhouse() {
    local wheel=$1 key scratch name
    [ -f "$wheel" ] || die "no wheel at $wheel"
    base
    # The wheel's dependencies and the build requirement decide what the wheelhouse must hold.
    key=$( (python3 - "$wheel" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    print("\n".join(l for l in whl.read(meta).decode().splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l))
PY
          echo setuptools) | sha256sum | cut -c1-16)
    if [ -f "$WHEELHOUSE/.key" ] && [ "$(cat "$WHEELHOUSE/.key")" = "$key" ]; then echo "$WHEELHOUSE"; return; fi
    scratch=$ROOT.scratch
    safe_rm_root "$scratch" || exit 1
    debian_root_log "fetching the dependencies of $(basename "$wheel") for $SUITE's Python into $WHEELHOUSE"
    cp -a --reflink=auto "$ROOT" "$scratch"
    copy_pip_config "$scratch"
    name=$(basename "$wheel")
    cp "$wheel" "$scratch/tmp/$name"
    chroot "$scratch" python3 -m venv /tmp/fetch
    # shellcheck disable=SC2046
    chroot "$scratch" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 $(pip_environment) \
        /tmp/fetch/bin/pip download --quiet --dest /wheelhouse "/tmp/$name" setuptools >&2 \
        || { safe_rm_root "$scratch"; die "pip download failed"; }
    rm -f "$scratch/wheelhouse/$name"
    echo "$key" >"$scratch/wheelhouse/.key"
    safe_rm_root "$WHEELHOUSE" || exit 1
    mv "$scratch/wheelhouse" "$WHEELHOUSE"
    safe_rm_root "$scratch" || exit 1
    echo "$WHEELHOUSE"
}

fresh() {
    local dest=$1
    [ ! -e "$dest" ] || die "$dest exists"
    base
    cp -a --reflink=auto "$ROOT" "$dest"
    rm -f "$dest/.ingestor-complete"
    echo "$dest"
}

case "${1:-}" in
    base) base; echo "$ROOT" ;;
    wheelhouse) [ -n "${2:-}" ] || die "usage: $0 wheelhouse WHEEL"; wheelhouse "$2" ;;
    fresh) [ -n "${2:-}" ] || die "usage: $0 fresh DEST"; fresh "$2" ;;
    destroy) safe_rm_root "$ROOT.scratch" && safe_rm_root "$WHEELHOUSE" && safe_rm_root "$ROOT" ;;
    *) echo "usage: $0 base | wheelhouse WHEEL | fresh DEST | destroy" >&2; exit 2 ;;
esac
