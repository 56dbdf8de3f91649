#!/usr/bin/env bash
# ensure-engine.sh - make sure a Docker engine answers on this machine.
#
# Idempotent:
#   * `docker info` already answers        -> nothing to do.
#   * dockerd missing                       -> apt-get install docker.io (+ iptables).
#   * dockerd present but not running       -> start it in the background
#     (setsid, logs to $LAB_DOCKERD_LOG), then poll `docker info` for at most
#     $LAB_DOCKERD_TIMEOUT seconds.
#
# Flags chosen by probing this machine (see README.md):
#   --storage-driver   overlay2 if a test overlay mount works, else vfs
#   --ip-forward=false --ip-masq=false
#                      lab safety: containers never get routed/NATed to the
#                      outside world; container<->container on one bridge and
#                      host->published 127.0.0.1 ports still work.
#   --iptables=false   only if iptables itself does not work here
#   --bridge=none      only if a Linux bridge cannot be created here
#
# Environment overrides:
#   LAB_DOCKERD_LOG        log file            (default /var/log/dockerd-lab.log)
#   LAB_DOCKERD_TIMEOUT    seconds to wait     (default 60)
#   LAB_DOCKER_STORAGE_DRIVER  force a storage driver (overlay2|vfs)
#   LAB_DOCKERD_EXTRA_FLAGS    appended verbatim to the dockerd command line
set -euo pipefail

LOG=${LAB_DOCKERD_LOG:-/var/log/dockerd-lab.log}
TIMEOUT=${LAB_DOCKERD_TIMEOUT:-60}
DATA_ROOT=/var/lib/docker

say() { printf 'ensure-engine: %s\n' "$*"; }
die() { printf 'ensure-engine: ERROR: %s\n' "$*" >&2; exit 1; }

# Lab safety: an `--internal` network has no route off the host, but its containers can still
# open connections to the host itself (its addresses on the bridge, docker0, eth0). Lab bridges
# are named tlslab<run>; drop every new connection arriving from one (replies to the host's own
# connections to containers still pass). Needs root and iptables; said, never fatal.
isolate_host() {
    local rule=(INPUT -i tlslab+ -m conntrack --ctstate NEW -j DROP)
    if [ "$(id -u)" != 0 ] || ! iptables -S >/dev/null 2>&1; then
        say "WARNING: cannot add the host firewall rule (needs root and iptables): lab containers can reach host services"
        return 0
    fi
    if iptables -C "${rule[@]}" 2>/dev/null; then return 0; fi
    iptables -I "${rule[@]}"
    say "host firewall: new connections from lab bridges (tlslab+) to the host are dropped"
}

# Room in the kernel's neighbour (ARP) table: it is shared by every network namespace, and a
# whole scoreboard (14 sender containers talking to 60-odd receivers, plus the last run's entries
# not yet collected) overflows the default 1024; a new entry then fails and a sender's connect
# says "No route to host", which would read as the sender's failure. Needs root; said, never fatal.
neighbour_room() {
    local now
    now=$(cat /proc/sys/net/ipv4/neigh/default/gc_thresh3 2>/dev/null || echo 0)
    [ "$now" -ge 16384 ] && return 0
    if [ "$(id -u)" != 0 ] || ! sysctl -q -w net.ipv4.neigh.default.gc_thresh1=4096 \
        net.ipv4.neigh.default.gc_thresh2=8192 net.ipv4.neigh.default.gc_thresh3=16384; then
        say "WARNING: neighbour table limit is $now (gc_thresh3); a whole scoreboard needs 16384 (as root: sysctl -w net.ipv4.neigh.default.gc_thresh3=16384)"
        return 0
    fi
    say "neighbour table: gc_thresh3 $now -> 16384 (room for the scoreboard's containers)"
}

if docker info >/dev/null 2>&1; then
    isolate_host
    neighbour_room
    say "docker engine already answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')); nothing to do"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root to install/start dockerd"

installed=""
if ! command -v dockerd >/dev/null 2>&1; then
    say "dockerd not found; installing Debian's docker.io (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # The package's maintainer scripts try to start the service; without an
    # init system that only prints noise, but a policy-rc.d makes it explicit.
    policy_created=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_created=1
    fi
    apt_log=$(mktemp /tmp/ensure-engine-apt.XXXXXX.log)
    if ! { apt-get update && apt-get install -y --no-install-recommends docker.io iptables; } \
            >"$apt_log" 2>&1; then
        [ -n "$policy_created" ] && rm -f /usr/sbin/policy-rc.d
        tail -n 20 "$apt_log" >&2
        die "apt-get install docker.io failed (full log: $apt_log)"
    fi
    [ -n "$policy_created" ] && rm -f /usr/sbin/policy-rc.d
    rm -f "$apt_log"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd still not on PATH"
    installed="installed docker.io $(dpkg-query -W -f '${Version}' docker.io 2>/dev/null); "
fi
command -v docker >/dev/null 2>&1 || die "docker CLI not found (docker.io should provide /usr/bin/docker)"

# A dockerd that is already starting (pidfile alive) just needs waiting for.
already_running=""
if [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    already_running=$(cat /var/run/docker.pid)
    say "dockerd (pid $already_running) is running but not answering yet; waiting"
fi

flags=()
notes=()
if [ -z "$already_running" ]; then
    # --- storage driver -----------------------------------------------------
    driver=${LAB_DOCKER_STORAGE_DRIVER:-}
    if [ -z "$driver" ]; then
        mkdir -p "$DATA_ROOT"
        probe=$(mktemp -d "$DATA_ROOT/.overlay-probe.XXXXXX")
        mkdir -p "$probe"/{l,u,w,m}
        if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" \
                "$probe/m" 2>/dev/null; then
            umount "$probe/m"
            driver=overlay2
        else
            driver=vfs
            notes+=("overlay mount failed in this sandbox -> vfs (slow, disk hungry)")
        fi
        rm -rf "$probe"
    fi
    flags+=(--storage-driver="$driver")

    # --- iptables -----------------------------------------------------------
    if iptables -S >/dev/null 2>&1; then
        # Lab safety: never route or NAT container traffic off the machine.
        flags+=(--ip-forward=false --ip-masq=false)
    else
        flags+=(--iptables=false --ip-forward=false --ip-masq=false)
        notes+=("iptables unusable -> --iptables=false")
    fi

    # --- bridge -------------------------------------------------------------
    if ip link add labprobebr0 type bridge 2>/dev/null; then
        ip link del labprobebr0
    else
        flags+=(--bridge=none)
        notes+=("cannot create Linux bridges -> --bridge=none (only --network none/host work)")
    fi

    # shellcheck disable=SC2206  # intentional word splitting of extra flags
    [ -n "${LAB_DOCKERD_EXTRA_FLAGS:-}" ] && flags+=(${LAB_DOCKERD_EXTRA_FLAGS})

    mkdir -p "$(dirname "$LOG")"
fi

# Lines of $LOG written since the last start by this script.
this_run_log() { awk '/^=== /{buf=""} {buf = buf $0 "\n"} END{printf "%s", buf}' "$LOG" | tail -n "${1:-25}"; }

start_dockerd() {
    echo "=== $(date -u +%FT%TZ) ensure-engine.sh: dockerd ${flags[*]}" >>"$LOG"
    setsid nohup dockerd "${flags[@]}" >>"$LOG" 2>&1 </dev/null &
    dpid=$!
    say "started dockerd (pid $dpid) ${flags[*]}; log: $LOG"
}

# Returns 0 once `docker info` answers, 1 if dockerd died, 2 on timeout.
wait_for_engine() {
    local deadline=$(( $(date +%s) + TIMEOUT ))
    while ! docker info >/dev/null 2>&1; do
        if [ -n "${dpid:-}" ] && ! kill -0 "$dpid" 2>/dev/null; then return 1; fi
        [ "$(date +%s)" -lt "$deadline" ] || return 2
        sleep 0.5
    done
}

start=$(date +%s%N)
[ -z "$already_running" ] && start_dockerd
rc=0; wait_for_engine || rc=$?
if [ $rc = 1 ] && [ -z "${LAB_DOCKER_STORAGE_DRIVER:-}" ] && [[ " ${flags[*]} " == *" --storage-driver=overlay2 "* ]] \
        && this_run_log 200 | grep -v '^=== ' | grep -qi overlay; then
    notes+=("dockerd failed with overlay2 -> retried with vfs (slow, disk hungry)")
    say "dockerd failed on overlay2; retrying with --storage-driver=vfs"
    flags=("${flags[@]/--storage-driver=overlay2/--storage-driver=vfs}")
    start_dockerd
    rc=0; wait_for_engine || rc=$?
fi
if [ $rc != 0 ]; then
    echo "---- $LOG (this start) ----" >&2
    this_run_log 25 >&2
    if [ $rc = 1 ]; then
        die "dockerd exited during startup. Hints: overlay errors -> LAB_DOCKER_STORAGE_DRIVER=vfs; iptables errors -> LAB_DOCKERD_EXTRA_FLAGS=--iptables=false; 'pid file found' -> a dockerd is already running"
    fi
    die "docker info did not answer within ${TIMEOUT}s. Hint: read $LOG; dockerd (pid ${dpid:-$already_running}) may still be starting, raise LAB_DOCKERD_TIMEOUT"
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
isolate_host
neighbour_room

drv=$(docker info --format '{{.Driver}}' 2>/dev/null || echo '?')
ver=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
extra=""
[ ${#notes[@]} -gt 0 ] && extra=" [$(IFS=';'; echo "${notes[*]}")]"
if [ -n "$already_running" ]; then
    say "${installed}dockerd pid $already_running answered after ${ms} ms (engine $ver, storage $drv)$extra"
else
    say "${installed}started dockerd pid $dpid, answering after ${ms} ms (engine $ver, storage $drv, flags: ${flags[*]})$extra"
fi
