#!/usr/bin/env bash
# run-smoke.sh [BASE_IMAGE [PYVER]] - prove the lab installs and imports in a
# container built and run with --network none.
#
# Defaults: BASE_IMAGE=sender-tls-lab/base:bookworm (built if missing), PYVER=3.11.
# For a stock python:3.12-slim (needs it loaded locally: no registry here):
#   run-smoke.sh python:3.12-slim 3.12
# The smoke image and the temporary build context are removed afterwards.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKER_DIR=$(cd "$HERE/.." && pwd)
BASE=${1:-sender-tls-lab/base:bookworm}
PYVER=${2:-3.11}
IMG=sender-tls-lab/smoke:$$
say() { printf '[smoke] %s\n' "$*"; }

"$DOCKER_DIR/ensure-engine.sh"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if [ "$BASE" = sender-tls-lab/base:bookworm ]; then
        "$DOCKER_DIR/build-base-image.sh" "$BASE"
    else
        echo "[smoke] base image $BASE not present locally (no registry is reachable)" >&2
        exit 1
    fi
fi

CTX=$(mktemp -d /tmp/lab-smoke.XXXXXX)
cleanup() {
    docker image rm -f "$IMG" >/dev/null 2>&1 || true
    rm -rf "$CTX"
}
trap cleanup EXIT

"$DOCKER_DIR/download-wheels.sh" "$CTX/wheels" "$PYVER"
cp "$HERE/Dockerfile" "$CTX/Dockerfile"

say "docker build --network none (base $BASE)"
t=$(date +%s)
# The Debian engine (20.10) + this CLI have no buildx: use the classic builder
# explicitly; its "legacy builder is deprecated" notice is shown only on failure.
if ! DOCKER_BUILDKIT=0 docker build --network none --build-arg "BASE_IMAGE=$BASE" -t "$IMG" \
        "$CTX" >"$CTX/build.log" 2>&1; then
    tail -n 30 "$CTX/build.log" >&2
    echo "[smoke] FAIL: docker build" >&2
    exit 1
fi
say "built in $(( $(date +%s) - t ))s; image size $(docker image inspect -f '{{.Size}}' "$IMG" | awk '{printf "%.0f MB", $1/1e6}')"
out=$(timeout 60 docker run --rm --network none "$IMG")
say "$out"
say "PASS (smoke image removed)"
