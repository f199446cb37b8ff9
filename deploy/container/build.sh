#!/usr/bin/env bash
# Build the container image with Debian's buildah, from a Debian base the project makes: a minimal root with
# python3 and python3-venv is debootstrapped once (cached as /var/cache/ingestor/container-root-SUITE), imported
# as localhost/ingestor-debian-base:SUITE, and deploy/container/Containerfile is built on it.  The dependencies
# come from a wheelhouse fetched with this machine's pip configuration (deploy/dev/install-root.sh).
#
#   deploy/container/build.sh [TAG]        (default localhost/ingestor)
# Environment: INGESTOR_CONTAINER_SUITE (default trixie), INGESTOR_APT_MIRROR (default: this machine's apt sources)
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-localhost/ingestor}
SUITE=${INGESTOR_CONTAINER_SUITE:-trixie}
ROOT=/var/cache/ingestor/container-root-$SUITE
BASE=localhost/ingestor-debian-base:$SUITE
DEBIAN_ROOT_PROG=build.sh
# shellcheck source=deploy/dev/debian-root.sh
. deploy/dev/debian-root.sh

ensure_tool buildah
bootstrap_root "$ROOT" "$SUITE" "python3,python3-venv,ca-certificates" || exit 1
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    debian_root_log "importing $ROOT as $BASE"
    tar --exclude=./.ingestor-complete -C "$ROOT" -c . | buildah import - "$BASE" >/dev/null 2>&1 \
        || tar --exclude=./.ingestor-complete -C "$ROOT" -c . | podman import - "$BASE" >/dev/null
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r pyproject.toml README.md ingestor connectors "$work/"
# The wheel only tells install-root.sh which dependencies the wheelhouse must hold; the image builds its own.
python3 -m venv "$work/venv"
"$work/venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$work/wheel" "$work"
INGESTOR_INSTALL_SUITE=$SUITE wheelhouse=$(deploy/dev/install-root.sh wheelhouse "$work"/wheel/*.whl)

# --isolation=chroot: RUN steps need no OCI runtime (docs/install.md: what fails on some machines).
# --format docker: the OCI format has no HEALTHCHECK.
buildah bud --isolation=chroot --layers --format docker -f deploy/container/Containerfile -t "$TAG" \
    --build-arg BASE="$BASE" --build-arg PIP_OPTIONS="--no-index --find-links /wheelhouse" \
    --volume "$wheelhouse:/wheelhouse:ro" .
debian_root_log "built $TAG"
