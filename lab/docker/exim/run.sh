#!/bin/sh
# Entrypoint of the Exim sender container: write exim4.conf from TLSLAB_* variables (one sender
# profile), start Exim's daemon, create the ready marker and print {"ready": true}; exit with it.
#   TLSLAB_MYHOSTNAME    primary_hostname (and the EHLO name receivers record)
#   TLSLAB_CAFILE        the lab CA, mounted read-only
#   TLSLAB_REQUIRE_TLS   yes: hosts_require_tls = * on the smtp transport
#   TLSLAB_VERIFY        yes: tls_verify_certificates = the lab CA and tls_verify_hosts = *
#   TLSLAB_CIPHERS       tls_require_ciphers (a GnuTLS priority string; empty: GnuTLS' default)
#   TLSLAB_RESOLVER      the lab's validating resolver (DANE): /etc/resolv.conf names it alone with
#                        `options trust-ad`; hosts_try_dane = *, DNSSEC requested for every domain
#   TLSLAB_RETRY         the retry rule's interval (Exim's retry schedule, compressed for the lab)
set -eu

CONF=/etc/exim4/exim4.conf
router_dnssec=""
main_dnssec=""
LOG=/var/log/exim4/mainlog
READY=/run/tlslab-exim.ready
: "${TLSLAB_MYHOSTNAME:?}" "${TLSLAB_CAFILE:?}"

rm -f "$READY"
transport_tls=""
if [ "${TLSLAB_REQUIRE_TLS:-}" = yes ]; then
  transport_tls="$transport_tls
  hosts_require_tls = *"
fi
if [ "${TLSLAB_VERIFY:-}" = yes ]; then
  transport_tls="$transport_tls
  tls_verify_certificates = $TLSLAB_CAFILE
  tls_verify_hosts = *"
fi
if [ -n "${TLSLAB_CIPHERS:-}" ]; then
  case "$TLSLAB_CIPHERS" in
    *[!A-Za-z0-9_.%+!:-]*) echo "TLSLAB_CIPHERS is not a GnuTLS priority string" >&2; exit 2 ;;
  esac
  transport_tls="$transport_tls
  tls_require_ciphers = $TLSLAB_CIPHERS"
fi
if [ -n "${TLSLAB_RESOLVER:-}" ]; then
  printf 'nameserver %s\noptions trust-ad\n' "$TLSLAB_RESOLVER" > /etc/resolv.conf
  main_dnssec="dns_dnssec_ok = 1"
  router_dnssec="
  dnssec_request_domains = *"
  transport_tls="$transport_tls
  hosts_try_dane = *"
fi
# Only the profile's TLS options differ from Debian's stock Exim 4.96: tls_require_ciphers
# (GnuTLS' default priority), tls_try_verify_hosts (*), tls_verify_certificates (system) and
# tls_tempfail_tryclear (true) stay at their defaults unless the profile sets one. The rest
# makes Exim a pure sender inside the lab: no local domains, DNS through the lab resolver (IPv4
# only), the log in /var/log/exim4, a retry rule compressed to seconds, bounces to
# sender.lab.test discarded, an SMTP listener on loopback only (it never receives mail).
cat > "$CONF" <<CONF
primary_hostname = $TLSLAB_MYHOSTNAME
qualify_domain = sender.lab.test
domainlist local_domains =
local_interfaces = 127.0.0.1
daemon_smtp_ports = 2525
disable_ipv6 = true
dns_ipv4_lookup = *
$main_dnssec
host_lookup =
log_file_path = /var/log/exim4/%slog
log_selector = +tls_peerdn +tls_sni +outgoing_port +deliver_time +smtp_protocol_error +millisec
keep_environment =
tls_advertise_hosts =
timeout_frozen_after = 1d
ignore_bounce_errors_after = 0s

begin routers

lab_bounces:
  driver = redirect
  domains = sender.lab.test : *.sender.lab.test
  data = :blackhole:

dnslookup:
  driver = dnslookup
  transport = remote_smtp
  ignore_target_hosts = 0.0.0.0 : 127.0.0.0/8$router_dnssec
  no_more

begin transports

remote_smtp:
  driver = smtp
  connect_timeout = 5s$transport_tls

begin retry

*  *  F,1d,${TLSLAB_RETRY:-1s}
CONF
/usr/sbin/exim4 -bV > /dev/null
mkdir -p /var/log/exim4
touch "$LOG"
chown Debian-exim:adm "$LOG"

/usr/sbin/exim4 -bdf -q1h &
daemon=$!
tries=0
until grep -q 'daemon started' "$LOG" 2>/dev/null; do
  # /proc, not kill -0: the daemon may already run as Debian-exim, which root without CAP_KILL
  # cannot signal
  if [ ! -d "/proc/$daemon" ] || [ "$tries" -ge 550 ]; then
    echo "exim did not start:" >&2
    cat "$LOG" /var/log/exim4/paniclog >&2 2>/dev/null || true
    exit 1
  fi
  tries=$((tries + 1))
  sleep 0.1
done
sed -n '/^begin transports/,/^begin retry/p' "$CONF" | sed 's/^/exim4.conf: /'
touch "$READY"
echo '{"ready": true}'
wait "$daemon"
