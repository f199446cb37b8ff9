# Shared shell for the Debian roots the project makes with debootstrap (sourced, not run):
# deploy/dev/timescaledb.sh (a TimescaleDB server for tests), deploy/dev/install-root.sh (a pristine root the
# production install is tested in) and deploy/container/build.sh (the container's base image).
#
# A root is built once into ROOT.partial and renamed to ROOT when complete, with a marker file; an interrupted
# run leaves only the .partial directory, which the next run removes (never when something is mounted inside).
#
# Environment:
#   INGESTOR_APT_MIRROR  Debian mirror (default: read from this machine's apt sources)

debian_root_log() { printf '%s: %s\n' "${DEBIAN_ROOT_PROG:-$(basename "$0")}" "$*" >&2; }

# The Debian mirror this machine already uses: first deb822 "URIs:" or one-line "deb" entry whose
# path ends in /debian (not -security, not a third-party repository).
apt_mirror() {
    if [ -n "${INGESTOR_APT_MIRROR:-}" ]; then echo "$INGESTOR_APT_MIRROR"; return; fi
    local f uri
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(grep -hE '^\s*(URIs:|deb\s)' "$f" 2>/dev/null \
              | sed -E 's/^\s*URIs:\s*//; s/^\s*deb\s+(\[[^]]*\]\s+)?//' \
              | tr ' ' '\n' | grep -E '^https?://[^ ]*/debian/?$' | head -n1 || true)
        if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
    done
    debian_root_log "no Debian mirror found in /etc/apt; set INGESTOR_APT_MIRROR"
    return 1
}

# Install a Debian package on this machine when its command is missing: ensure_tool COMMAND [PACKAGE]
ensure_tool() {
    local tool=$1 package=${2:-$1}
    command -v "$tool" >/dev/null && return 0
    debian_root_log "installing $package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null; }
}

# Refuse to delete a directory that has something mounted inside it.
safe_rm_root() {
    local dir=$1
    [ -e "$dir" ] || return 0
    if grep -q " $dir[/ ]" /proc/mounts; then debian_root_log "$dir has mounts inside; refusing to delete it"; return 1; fi
    rm -rf "$dir"
}

# bootstrap_root ROOT SUITE PACKAGES: a minbase root of SUITE with PACKAGES (comma separated), once.
# The debootstrap log goes next to the root (ROOT.debootstrap.log).
bootstrap_root() {
    local root=$1 suite=$2 packages=$3 mirror tmp log
    if [ -f "$root/.ingestor-complete" ]; then return 0; fi
    if [ "$(id -u)" != 0 ]; then debian_root_log "making a Debian root needs root (debootstrap, chroot)"; return 1; fi
    ensure_tool debootstrap || return 1
    mirror=$(apt_mirror) || return 1
    tmp="$root.partial"
    log="$root.debootstrap.log"
    safe_rm_root "$tmp" || return 1
    mkdir -p "$(dirname "$root")" || return 1
    debian_root_log "bootstrapping $suite with $packages into $root (one time, a few minutes)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" >"$log" 2>&1 \
        || { debian_root_log "debootstrap failed; see $log"; tail -n 20 "$log" >&2; return 1; }
    safe_rm_root "$root" || return 1
    mv "$tmp" "$root"
    touch "$root/.ingestor-complete"
}
