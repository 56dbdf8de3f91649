#!/usr/bin/env bash
# download-wheels.sh OUTDIR [PYVER] - wheelhouse for an offline `pip install`.
#
# Puts into OUTDIR the project's own wheel (sender-tls-lab, built from the
# project root two levels above this script) plus a binary wheel of every
# runtime dependency, for CPython PYVER (default 3.11 = Debian bookworm's) on
# this machine's architecture (`uname -m`) and glibc-based Linux.  A
# Dockerfile can then do, with no network:
#
#     COPY wheels/ /wheels/
#     RUN python3 -m venv /opt/lab && \
#         /opt/lab/bin/pip install --no-index --find-links /wheels sender-tls-lab
#
# The project is built from a temporary copy of the source tree so that no
# build/ or *.egg-info directory is written into the work tree, and so that a
# wheelhouse lying inside lab/docker/ is not swallowed by the package data
# (`lab = ["docker/**/*"]`).
#
# Environment overrides:
#   PIP        pip command to use   (default: python3 -m pip)
#   LAB_GLIBC_MAX  newest manylinux_2_N tag to accept (default 36 = bookworm's glibc 2.36)
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [PYVER]   (PYVER like 3.11 or 3.12; default 3.11)" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
OUTDIR=$1
PYVER=${2:-3.11}
[[ $PYVER =~ ^3\.[0-9]+$ ]] || usage
PIP=${PIP:-python3 -m pip}
GLIBC_MAX=${LAB_GLIBC_MAX:-36}
MTA_STS_RESOLVER=1.5.1  # postfix-mta-sts-resolver, pinned: the suite's expectations cite its docs

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
[ -f "$PROJECT/pyproject.toml" ] || { echo "no pyproject.toml in $PROJECT" >&2; exit 1; }
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

say() { printf '[download-wheels] %s\n' "$*"; }
T0=$(date +%s)

# --- 1. the project's own wheel, built from a clean copy ---------------------------
SRC=$(mktemp -d /tmp/lab-wheel-src.XXXXXX)
trap 'rm -rf "$SRC"' EXIT
excludes=(
    --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./build --exclude=./dist
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.pyc'
    --exclude=./.pytest_cache --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.hypothesis
    --exclude=./reports --exclude=./certs
    --exclude='./lab/docker/*/wheels' --exclude='./lab/docker/wheels'
)
case "$OUTDIR/" in
    "$PROJECT"/*) excludes+=("--exclude=./${OUTDIR#"$PROJECT"/}") ;;
esac
tar -C "$PROJECT" "${excludes[@]}" -cf - . | tar -C "$SRC" -xf -
if [ ! -f "$SRC/README.md" ] && grep -q '^readme *= *"README.md"' "$SRC/pyproject.toml"; then
    say "note: README.md missing in the project; using an empty one for the build"
    : >"$SRC/README.md"
fi
rm -f "$OUTDIR"/sender_tls_lab-*.whl
say "building the project wheel from $PROJECT"
$PIP wheel --quiet --no-deps --wheel-dir "$OUTDIR" "$SRC"
WHEEL=$(ls "$OUTDIR"/sender_tls_lab-*.whl)
say "built $(basename "$WHEEL")"

# --- 2. binary wheels of all dependencies for the target interpreter -----------------
ARCH=$(uname -m)
platforms=(--platform "manylinux2014_$ARCH")
for n in $(seq 17 "$GLIBC_MAX"); do platforms+=(--platform "manylinux_2_${n}_$ARCH"); done
say "downloading dependencies for CPython $PYVER, $ARCH, manylinux_2_17..2_$GLIBC_MAX"
# (grep drops the noise of this machine's pip config, which lists local
#  file:// indexes that have no entry for most packages)
$PIP download --quiet --dest "$OUTDIR" \
    --only-binary=:all: --implementation cp --python-version "$PYVER" "${platforms[@]}" \
    "$WHEEL" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

# the MTA-STS policy daemon the postfix-mta-sts sender uses (its own venv in the postfix image)
say "downloading postfix-mta-sts-resolver for the postfix image"
$PIP download --quiet --dest "$OUTDIR" \
    --only-binary=:all: --implementation cp --python-version "$PYVER" "${platforms[@]}" \
    "postfix-mta-sts-resolver==$MTA_STS_RESOLVER" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

n=$(find "$OUTDIR" -maxdepth 1 -name '*.whl' | wc -l)
size=$(du -sm "$OUTDIR" | cut -f1)
say "OK: $n wheels (${size} MB) in $OUTDIR for python $PYVER/$ARCH in $(( $(date +%s) - T0 ))s"
