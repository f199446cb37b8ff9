#!/usr/bin/env bash
# Remove what deploy/debian/install.sh made, as root.  Safe to run twice.
#
#   deploy/debian/uninstall.sh [--purge]
#
# Always removed: the service (stopped and disabled when systemd runs), its unit file, /opt/ingestor and the
# `ingestor` user and group.
# Kept unless --purge: /etc/ingestor (configuration, credentials) and /var/lib/ingestor (the spool, with any
# readings not yet written to the database, and the OPC UA certificates the PLCs trust).  A later install.sh
# picks them up again and gives them to the account it makes.
set -euo pipefail

PROG=uninstall.sh
PREFIX=/opt/ingestor
ETC=/etc/ingestor
STATE=/var/lib/ingestor
UNIT=/etc/systemd/system/ingestor.service

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$PROG" "$*"; }

PURGE=no
case "${1:-}" in
    "") ;;
    --purge) PURGE=yes ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    *) printf '%s: unknown argument %s\n' "$PROG" "$1" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "must be run as root: sudo $0 $*"

if [ -d /run/systemd/system ] && systemctl cat ingestor.service >/dev/null 2>&1; then
    say "stopping and disabling ingestor.service (it drains first)"
    systemctl disable --now ingestor.service || true
fi
# A daemon still running as the account (started by hand, or systemd is not running): stopping it is the
# operator's decision, since it may hold readings not yet written.
running_as() { # the process ids of a user, from /proc (procps is not in a minimal Debian)
    local uid p
    uid=$(id -u "$1")
    for p in /proc/[0-9]*; do
        if [ "$(stat -c %u "$p" 2>/dev/null)" = "$uid" ]; then printf '%s ' "${p#/proc/}"; fi
    done
}
if getent passwd ingestor >/dev/null; then
    pids=$(running_as ingestor)
    [ -z "$pids" ] || die "processes of user ingestor are still running ($pids); stop them (SIGTERM drains) and run again"
fi

if [ -f "$UNIT" ]; then
    rm -f "$UNIT"
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    say "removed $UNIT"
fi
if [ -d "$PREFIX" ]; then rm -rf "$PREFIX"; say "removed $PREFIX"; fi
if getent passwd ingestor >/dev/null; then userdel ingestor; say "removed the user ingestor"; fi
if getent group ingestor >/dev/null; then groupdel ingestor; fi

if [ "$PURGE" = yes ]; then
    rm -rf "$ETC" "$STATE"
    say "purged $ETC and $STATE"
else
    for kept in "$ETC" "$STATE"; do
        if [ -e "$kept" ]; then say "kept $kept (remove it with --purge)"; fi
    done
fi
say "done"
