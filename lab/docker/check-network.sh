#!/usr/bin/env bash
# check-network.sh [BASE_IMAGE] - how can the harness reach containers here?
#
# Bounded probe (every step under `timeout`), with the lab base image, on a
# user-defined --internal network that it creates and deletes again:
#   1. container -> container by name (Docker's embedded DNS)
#   2. host -> published port on 127.0.0.1 (-p 127.0.0.1::8000) for a
#      container that is only on the --internal network (Docker ignores it),
#      2b. and once the container is also on a second, non-internal "publish"
#      network with masquerading off
#   3. host -> container IP on the internal bridge
#   4. lab DNS: dnsmasq (--no-resolv) serving lab.test MX -> mx1.lab.test + A;
#      a client container started with --dns <dnsmasq ip> resolves both
#      (mx1 is deliberately NOT a docker alias, so Docker's embedded DNS must
#      forward it to dnsmasq)
#   5. container -> the internet is not reachable, checked without sending
#      anything: host ip_forward=0 and Docker's DROP rules for the internal
#      bridge
# Traffic goes only to 127.0.0.1 and to the lab's own containers.
# Prints one PASS/FAIL line per check; exits 1 if a check that the harness
# relies on (1 and 4) fails.
set -uo pipefail
IMG=${1:-sender-tls-lab/base:bookworm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ID=labchk$$
NET=$ID-net
PUBNET=$ID-pub
SUBNET=${LAB_CHECK_SUBNET:-172.30.231.0/24}
PUBSUBNET=${LAB_CHECK_PUB_SUBNET:-172.30.232.0/24}
PREFIX=${SUBNET%.*}
DNS_IP=$PREFIX.53
MX_IP=$PREFIX.25

"$HERE/ensure-engine.sh" || exit 1
docker image inspect "$IMG" >/dev/null 2>&1 || { echo "image $IMG missing (run build-base-image.sh)" >&2; exit 1; }

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    docker rm -f "$ID-srv" "$ID-dns" >/dev/null 2>&1
    docker network rm "$NET" "$PUBNET" >/dev/null 2>&1
}
trap cleanup EXIT
fail=0
ERR=$(mktemp /tmp/labchk.XXXXXX)
trap 'cleanup; rm -f "$ERR"' EXIT
res() { printf '%-4s %s\n' "$1" "$2"; }

t=$(date +%s%N)
timeout 30 docker run --rm --network none "$IMG" true
res INFO "container start+stop (--network none, --rm): $(( ($(date +%s%N) - t) / 1000000 )) ms"

docker network create --internal --subnet "$SUBNET" "$NET" >/dev/null || exit 1
res INFO "created --internal network $NET ($SUBNET)"

# An HTTP server standing in for a receiver, with a published loopback port.
docker run -d --name "$ID-srv" --hostname mx --network "$NET" --ip "$MX_IP" \
    --network-alias mx.lab.test -p 127.0.0.1::8000 -w /etc \
    "$IMG" python3 -m http.server 8000 >/dev/null 2>"$ERR" || { cat "$ERR"; exit 1; }
# Wait until it listens (bounded).
for _ in $(seq 1 40); do
    docker exec "$ID-srv" python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8000), 1)' \
        >/dev/null 2>&1 && break
    sleep 0.25
done

# 1. by name from another container on the same internal network
fetch='import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)'
if out=$(timeout 30 docker run --rm --network "$NET" "$IMG" python3 -c "$fetch" "http://$ID-srv:8000/hostname" 2>"$ERR") \
        && [ "$out" = 200 ]; then
    res PASS "1 container->container by name ($ID-srv) on --internal network"
else
    res FAIL "1 container->container by name: $out $(tail -n 3 "$ERR")"; fail=1
fi
if out=$(timeout 30 docker run --rm --network "$NET" "$IMG" python3 -c "$fetch" "http://mx.lab.test:8000/hostname" 2>"$ERR") \
        && [ "$out" = 200 ]; then
    res PASS "1b container->container by --network-alias (mx.lab.test)"
else
    res FAIL "1b by --network-alias: $out"
fi

# 2. published port on host loopback, container only on the internal network
port=$(docker port "$ID-srv" 8000/tcp 2>/dev/null | head -n1 | sed 's/.*://')
if [ -n "$port" ] && out=$(timeout 10 python3 -c "$fetch" "http://127.0.0.1:$port/hostname" 2>&1) \
        && [ "$out" = 200 ]; then
    res PASS "2 host->127.0.0.1:$port published from a container only on the --internal network"
else
    res INFO "2 -p 127.0.0.1::8000 on a container only on the --internal network: not published (Ports=$(docker inspect -f '{{json .NetworkSettings.Ports}}' "$ID-srv"))"
fi
# 2b. add a non-internal "publish" network (no masquerading; host ip_forward=0)
docker network create --subnet "$PUBSUBNET" \
    -o com.docker.network.bridge.enable_ip_masquerade=false "$PUBNET" >/dev/null \
 && docker network connect "$PUBNET" "$ID-srv" \
 && docker restart -t 1 "$ID-srv" >/dev/null
for _ in $(seq 1 40); do
    docker exec "$ID-srv" python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8000), 1)' \
        >/dev/null 2>&1 && break
    sleep 0.25
done
port=$(docker port "$ID-srv" 8000/tcp 2>/dev/null | head -n1 | sed 's/.*://')
if [ -n "$port" ] && out=$(timeout 10 python3 -c "$fetch" "http://127.0.0.1:$port/hostname" 2>&1) \
        && [ "$out" = 200 ]; then
    res PASS "2b host->127.0.0.1:$port once the container is also on non-internal $PUBNET (docker-proxy)"
else
    res FAIL "2b published port via a second network (port='${port}'): ${out:-no port mapping}"
fi

# 3. host -> container IP directly
if out=$(timeout 10 python3 -c "$fetch" "http://$MX_IP:8000/hostname" 2>&1) && [ "$out" = 200 ]; then
    res PASS "3 host->container IP $MX_IP:8000 on the --internal bridge"
else
    res FAIL "3 host->container IP $MX_IP: $out"
fi

# 4. lab DNS with dnsmasq: lab.test MX -> mx1.lab.test -> $MX_IP, nothing forwarded.
docker run -d --name "$ID-dns" --network "$NET" --ip "$DNS_IP" "$IMG" \
    dnsmasq --keep-in-foreground --no-resolv --no-hosts \
    --log-queries --log-facility=- --user=dnsmasq \
    --local=/lab.test/ --mx-host=lab.test,mx1.lab.test,10 \
    --host-record="mx1.lab.test,$MX_IP" \
    --txt-record=_mta-sts.lab.test,"v=STSv1; id=1" >/dev/null 2>"$ERR" || { cat "$ERR"; exit 1; }
sleep 0.5
# Minimal stub-resolver query in Python (the image has no dig).
resolve='
import socket, struct, sys, random
def q(name, qtype, server):
    tid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0)
    pkt += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    pkt += struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(pkt, (server, 53)); data = s.recv(4096)
    return struct.unpack(">H", data[2:4])[0] & 0xF, struct.unpack(">H", data[6:8])[0]
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
rc, n = q("lab.test", 15, ns)
print("resolv.conf nameserver", ns, "| MX lab.test rcode", rc, "answers", n,
      "| A mx1.lab.test", socket.gethostbyname("mx1.lab.test"))
'
if out=$(timeout 30 docker run --rm --network "$NET" --dns "$DNS_IP" "$IMG" python3 -c "$resolve" 2>"$ERR") \
        && [[ $out == *"rcode 0 answers 1"*"$MX_IP"* ]]; then
    res PASS "4 dnsmasq lab DNS via --dns $DNS_IP: $out"
else
    res FAIL "4 dnsmasq lab DNS: $out $(tail -n 3 "$ERR")"; fail=1
    docker logs "$ID-dns" 2>&1 | tail -n 5
fi
docker logs "$ID-dns" 2>&1 | grep -E 'query\[|forwarded' | sed 's/^/     dnsmasq: /' | head -n 6

# 5. no way out, judged from the rules, without sending anything anywhere
fwd=$(cat /proc/sys/net/ipv4/ip_forward)
br="br-$(docker network inspect -f '{{.Id}}' "$NET" | cut -c1-12)"
drops=$(iptables -S DOCKER-ISOLATION-STAGE-1 2>/dev/null | grep -c -- "$br -j DROP")
routes=$(timeout 30 docker run --rm --network "$NET" "$IMG" ip route 2>/dev/null | tr '\n' ';')
if [ "$fwd" = 0 ] && [ "$drops" -ge 2 ]; then
    res PASS "5 no path out: host ip_forward=0 and $drops DROP rules for $br (container routes: $routes)"
else
    res FAIL "5 ip_forward=$fwd, DROP rules for $br: $drops (routes: $routes)"
fi
exit $fail
