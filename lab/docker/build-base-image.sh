#!/usr/bin/env bash
# build-base-image.sh [TAG] - build the lab's Debian base image locally.
#
# No image registry is reachable from this machine, so the base image is made
# from scratch: debootstrap (minbase) from the Debian mirror this machine's
# apt is configured with, a second apt pass inside the chroot for postfix
# (needs a debconf preseed) and security updates, then
# `tar | docker import`.
#
# Default TAG: sender-tls-lab/base:bookworm.  If the image exists already the
# script does nothing (remove it with `docker rmi TAG` to rebuild).
#
# Environment overrides:
#   LAB_BASE_SUITE       Debian suite                    (default bookworm)
#   LAB_BASE_MIRROR      mirror URI                      (default: read from apt sources)
#   LAB_BASE_CACHE       .deb cache kept between builds  (default /var/cache/sender-tls-lab/debs)
#   LAB_BASE_EXTRA_PACKAGES  more packages, space separated
#   LAB_BASE_TIMEOUT     seconds allowed for each of debootstrap / chroot apt (default 1200)
set -euo pipefail

TAG=${1:-sender-tls-lab/base:bookworm}
SUITE=${LAB_BASE_SUITE:-bookworm}
CACHE=${LAB_BASE_CACHE:-/var/cache/sender-tls-lab/debs}
STEP_TIMEOUT=${LAB_BASE_TIMEOUT:-1200}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Installed by debootstrap itself (no debconf questions).
DEBOOTSTRAP_PACKAGES=(
    python3 python3-venv python3-pip   # lab.serve runs in a venv (see README)
    ca-certificates openssl            # trust store + TLS debugging
    dnsmasq-base                       # lab DNS: zone lab.test (MX/A/TXT/TLSA) from CLI flags
    procps iproute2                    # ps/pgrep, ip/ss for debugging and health checks
)
# Installed in a second pass inside the chroot with real apt: postfix needs a
# debconf preseed, and debootstrap's resolver cannot satisfy virtual packages
# (libnet-ssleay-perl needs perl-openssl-abi-3).
CHROOT_PACKAGES=(
    postfix                                           # the sender under test
    swaks libnet-ssleay-perl libio-socket-ssl-perl    # SMTP/STARTTLS test client
)
# shellcheck disable=SC2206
EXTRA=(${LAB_BASE_EXTRA_PACKAGES:-})

say() { printf '[build-base-image %s] %s\n' "$(date +%T)" "$*"; }
die() { printf '[build-base-image] ERROR: %s\n' "$*" >&2; exit 1; }

T0=$(date +%s)
docker info >/dev/null 2>&1 || "$HERE/ensure-engine.sh"  # make docker-ready ran it already

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "image $TAG already exists ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')); nothing to do"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"

# --- host tools ---------------------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap on the host (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap \
        >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap \
            >/dev/null || die "could not install debootstrap"
    }
fi

# --- apt sources of this machine ------------------------------------------------
# Prints "URI SUITE COMPONENTS..." for every enabled `deb` entry, from both the
# one-line format (*.list) and the deb822 format (*.sources).
apt_source_entries() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '
            /^[[:space:]]*#/ {next}
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }   # skip [options]
                line = $i; for (j = i + 1; j <= NF; j++) line = line " " $j
                print line
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "")
                    { n = split(uris, u, " "); m = split(suites, s, " ")
                      for (a = 1; a <= n; a++) for (b = 1; b <= m; b++)
                          print u[a] " " s[b] " " comps }
                types = uris = suites = comps = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^[[:space:]]*#/ {next}
            /^[[:space:]]*$/ { flush(); next }
            { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ /, "")
              if (key == "types") types = $0; else if (key == "uris") uris = $0
              else if (key == "suites") suites = $0; else if (key == "components") comps = $0
              else if (key == "enabled") enabled = tolower($0) }
            END { flush() }' "$f"
    done
}
ENTRIES=$(apt_source_entries | awk -v s="$SUITE" '$2 == s || index($2, s "-") == 1 || index($2, s "/") == 1')
if [ -n "${LAB_BASE_MIRROR:-}" ]; then
    MIRROR=$LAB_BASE_MIRROR
    ENTRIES=$(printf '%s %s main\n%s' "$MIRROR" "$SUITE" "$ENTRIES")
else
    MIRROR=$(awk -v s="$SUITE" '$2 == s {print $1; exit}' <<<"$ENTRIES")
fi
[ -n "$MIRROR" ] || die "no 'deb ... $SUITE' entry in /etc/apt/sources.list{,.d/*}; set LAB_BASE_MIRROR"
say "mirror: $MIRROR (suite $SUITE, from this machine's apt sources)"

# --- work dir + guaranteed cleanup ------------------------------------------------
WORK=$(mktemp -d /var/tmp/lab-base.XXXXXX)
ROOT=$WORK/rootfs
mkdir -p "$ROOT" "$CACHE"
cleanup() {
    # unmount everything below ROOT (deepest first) before deleting anything
    awk -v r="$ROOT" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if awk -v r="$ROOT" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/mounts; then
        echo "[build-base-image] WARNING: mounts remain below $ROOT; not deleting $WORK" >&2
    else
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. debootstrap ---------------------------------------------------------------
include=$(IFS=,; echo "${DEBOOTSTRAP_PACKAGES[*]}")
say "debootstrap --variant=minbase $SUITE ($(( ${#DEBOOTSTRAP_PACKAGES[@]} )) extra packages; log: $WORK/debootstrap.log)"
t=$(date +%s)
if ! DEBIAN_FRONTEND=noninteractive timeout "$STEP_TIMEOUT" \
        debootstrap --variant=minbase --cache-dir="$CACHE" --include="$include" \
        "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    [ -f "$ROOT/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
    die "debootstrap failed or timed out (${STEP_TIMEOUT}s)"
fi
T_DEBOOTSTRAP=$(( $(date +%s) - t ))
say "debootstrap done in ${T_DEBOOTSTRAP}s ($(du -sm --one-file-system "$ROOT" | cut -f1) MB)"

# --- 2. chroot apt pass: sources, security updates, postfix -------------------------
say "chroot apt: updates + ${CHROOT_PACKAGES[*]}${EXTRA[*]:+ ${EXTRA[*]}} (postfix preseeded to 'No configuration')"
t=$(date +%s)
rm -f "$ROOT/etc/apt/sources.list"
{
    echo "# generated by lab/docker/build-base-image.sh from the build host's apt sources"
    awk '{ printf "deb %s", $1; for (i = 2; i <= NF; i++) printf " %s", $i; print "" }' <<<"$ENTRIES"
} >"$ROOT/etc/apt/sources.list"
# Never start services inside the image build (nor later via invoke-rc.d).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
# Keep docs/man pages out of what the second pass installs (like Debian's slim images).
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/lab-excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"          # name resolution for the mirror only
mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/var/cache/apt/archives"
mount --bind "$CACHE" "$ROOT/var/cache/apt/archives"  # reuse .debs across rebuilds
in_chroot() { LC_ALL=C DEBIAN_FRONTEND=noninteractive timeout "$STEP_TIMEOUT" chroot "$ROOT" "$@"; }
{
    in_chroot debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string lab.test
EOF
    in_chroot apt-get update
    in_chroot apt-get -y -o Dpkg::Options::=--force-confold upgrade
    in_chroot apt-get install -y --no-install-recommends "${CHROOT_PACKAGES[@]}" "${EXTRA[@]}"
} >"$WORK/chroot-apt.log" 2>&1 || {
    tail -n 40 "$WORK/chroot-apt.log" >&2
    die "apt inside the chroot failed or timed out"
}
T_CHROOT=$(( $(date +%s) - t ))
say "chroot apt done in ${T_CHROOT}s"

# --- 3. trim ---------------------------------------------------------------------
umount "$ROOT/var/cache/apt/archives"
umount "$ROOT/proc"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
       "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* \
       "$ROOT"/tmp/* "$ROOT"/var/tmp/* "$ROOT"/debootstrap
find "$ROOT/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
: >"$ROOT/etc/resolv.conf"           # docker bind-mounts its own
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/etc/hostname"
echo lab.test >"$ROOT/etc/mailname"
say "rootfs trimmed to $(du -sm --one-file-system "$ROOT" | cut -f1) MB"

# --- 4. import ---------------------------------------------------------------------
t=$(date +%s)
pyver=$(chroot "$ROOT" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
# shellcheck disable=SC2016  # ${Version} is a dpkg-query field, not a shell variable
pfver=$(chroot "$ROOT" dpkg-query -W -f '${Version}' postfix)
tar --numeric-owner -C "$ROOT" -c . | docker import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.opencontainers.image.title=sender-tls-lab-base debian.suite=$SUITE python.version=$pyver postfix.version=$pfver" \
    --message "debootstrap $SUITE minbase + lab packages" \
    - "$TAG" >/dev/null
T_IMPORT=$(( $(date +%s) - t ))
size=$(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')
say "imported $TAG in ${T_IMPORT}s: $size, python $pyver, postfix $pfver"
say "total ${T_DEBOOTSTRAP}s debootstrap + ${T_CHROOT}s chroot apt + ${T_IMPORT}s import; $(( $(date +%s) - T0 ))s overall"
