#!/bin/sh
# Entrypoint of the Postfix sender container: write main.cf from TLSLAB_* variables (one sender
# profile), start Postfix, create the ready marker and print {"ready": true}; exit when it stops.
#   TLSLAB_MYHOSTNAME           myhostname (and the EHLO name receivers record)
#   TLSLAB_SECURITY_LEVEL       smtp_tls_security_level: none | may | encrypt | verify | secure
#   TLSLAB_MANDATORY_PROTOCOLS  smtp_tls_mandatory_protocols (empty: Postfix's default)
#   TLSLAB_PROTOCOLS            smtp_tls_protocols (empty: Postfix's default)
#   TLSLAB_CAFILE               smtp_tls_CAfile: the lab CA, mounted read-only
#   TLSLAB_MIN_BACKOFF          minimal_backoff_time (the retry schedule, compressed for the lab)
#   TLSLAB_DNS_SUPPORT_LEVEL    smtp_dns_support_level (empty: Postfix's default)
#   TLSLAB_RESOLVER             the lab's validating resolver: /etc/resolv.conf names it alone,
#                               with `options trust-ad` (else glibc clears the AD bit), instead
#                               of Docker's embedded DNS; the DNSSEC probe asks for ns:lab.test
#   TLSLAB_RELAY                yes: also be an authenticated submission relay (the relay driver's
#                               lab relay): 587 (STARTTLS) and 465 (implicit TLS), TLS and Cyrus
#                               SASL (PLAIN, LOGIN, sasldb) required, relaying only when
#                               authenticated; users are added later with `ctl.sh relay-user`
#   TLSLAB_RELAY_CERT/_KEY      the certificate and key the relay presents (mounted read-only)
#   TLSLAB_MTA_STS              yes: start postfix-mta-sts-resolver (trusting TLSLAB_CAFILE for
#                               policy hosts, DNS through the lab resolver) and use it as
#                               smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix
set -eu

LOG=/var/log/postfix.log
READY=/run/tlslab-postfix.ready
: "${TLSLAB_MYHOSTNAME:?}" "${TLSLAB_SECURITY_LEVEL:?}" "${TLSLAB_CAFILE:?}"

rm -f "$READY"
: > /etc/postfix/main.cf
# Only the TLS knobs of the profile differ from Debian's stock Postfix 3.7: ciphers, protocols and
# OpenSSL settings stay at their defaults. The rest makes Postfix a pure sender inside the lab:
# no local delivery, log to a file, DNS through the lab resolver, a retry schedule compressed to
# seconds, bounces (to sender.lab.test) discarded. smtp_skip_quit_response stays at its stock
# value (yes): Postfix closes right after QUIT, and the receiver must still record the session.
postconf -e \
  "compatibility_level = 3.6" \
  "myhostname = $TLSLAB_MYHOSTNAME" \
  "mydestination =" \
  "inet_interfaces = loopback-only" \
  "inet_protocols = ipv4" \
  "alias_maps =" \
  "alias_database =" \
  "maillog_file = $LOG" \
  "smtp_host_lookup = dns" \
  "disable_dns_lookups = no" \
  "smtp_tls_security_level = $TLSLAB_SECURITY_LEVEL" \
  "smtp_tls_CAfile = $TLSLAB_CAFILE" \
  "smtp_tls_loglevel = 1" \
  "smtp_connect_timeout = 5s" \
  "minimal_backoff_time = ${TLSLAB_MIN_BACKOFF:-1s}" \
  "maximal_backoff_time = 10s" \
  "queue_run_delay = 1h" \
  "maximal_queue_lifetime = 1d" \
  "bounce_queue_lifetime = 1d" \
  "transport_maps = inline:{ sender.lab.test=discard:, .sender.lab.test=discard: }"
if [ -n "${TLSLAB_MANDATORY_PROTOCOLS:-}" ]; then
  postconf -e "smtp_tls_mandatory_protocols = $TLSLAB_MANDATORY_PROTOCOLS"
fi
if [ -n "${TLSLAB_PROTOCOLS:-}" ]; then
  postconf -e "smtp_tls_protocols = $TLSLAB_PROTOCOLS"
fi
if [ -n "${TLSLAB_DNS_SUPPORT_LEVEL:-}" ]; then
  postconf -e "smtp_dns_support_level = $TLSLAB_DNS_SUPPORT_LEVEL"
fi
if [ -n "${TLSLAB_RESOLVER:-}" ]; then
  printf 'nameserver %s\noptions trust-ad\n' "$TLSLAB_RESOLVER" > /etc/resolv.conf
  postconf -e "dnssec_probe = ns:lab.test"
fi
# no chroot (the smtp client must read the container's resolv.conf), no SMTP listener
postconf -F '*/*/chroot = n'
postconf -M# smtp/inet
if [ "${TLSLAB_RELAY:-}" = yes ]; then
  : "${TLSLAB_RELAY_CERT:?}" "${TLSLAB_RELAY_KEY:?}"
  mkdir -p /etc/postfix/sasl
  printf '%s\n' 'pwcheck_method: auxprop' 'auxprop_plugin: sasldb' 'mech_list: PLAIN LOGIN' \
    'sasldb_path: /etc/sasldb2' > /etc/postfix/sasl/smtpd.conf
  : > /etc/sasldb2
  chown root:postfix /etc/sasldb2
  chmod 0640 /etc/sasldb2
  postconf -e \
    "inet_interfaces = all" \
    "mynetworks = 127.0.0.0/8" \
    "smtpd_tls_cert_file = $TLSLAB_RELAY_CERT" \
    "smtpd_tls_key_file = $TLSLAB_RELAY_KEY" \
    "smtpd_tls_loglevel = 1" \
    "smtpd_sasl_type = cyrus" \
    "smtpd_sasl_path = smtpd" \
    "cyrus_sasl_config_path = /etc/postfix/sasl" \
    "smtpd_sasl_local_domain = $TLSLAB_MYHOSTNAME" \
    "smtpd_sasl_security_options = noanonymous"
  relay="-o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes"
  relay="$relay -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
  relay="$relay -o smtpd_recipient_restrictions= -o smtpd_client_restrictions="
  postconf -M "submission/inet=submission inet n - n - - smtpd $relay -o smtpd_tls_security_level=encrypt"
  postconf -M "submissions/inet=submissions inet n - n - - smtpd $relay -o smtpd_tls_wrappermode=yes"
fi

if [ "${TLSLAB_MTA_STS:-}" = yes ]; then
  printf '%s\n' 'host: 127.0.0.1' 'port: 8461' 'reuse_port: true' 'shutdown_timeout: 5' \
    'cache: {type: internal, options: {cache_size: 1000}}' \
    'default_zone: {strict_testing: false, timeout: 4}' > /etc/mta-sts-daemon.yml
  # aiohttp's default context reads SSL_CERT_FILE: policy hosts are checked against the lab CA
  SSL_CERT_FILE="$TLSLAB_CAFILE" /opt/mta-sts/bin/mta-sts-daemon -c /etc/mta-sts-daemon.yml \
    -v info -l /var/log/mta-sts.log &
  tries=0
  until /opt/mta-sts/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 8461), 1).close()' 2>/dev/null; do
    if [ "$tries" -ge 100 ]; then echo "mta-sts-daemon did not start:" >&2; cat /var/log/mta-sts.log >&2; exit 1; fi
    tries=$((tries + 1))
    sleep 0.1
  done
  postconf -e "smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix"
fi

# `postfix start` first runs its integrity check (post-install create-missing, ~2.5 s here). Debian's
# package leaves out only `hold` and `trace`: create them and skip the check when nothing else is
# missing (Postfix's own quick-start flag).
Q=/var/spool/postfix
for d in hold trace; do [ -d "$Q/$d" ] || install -d -o postfix -g root -m 0700 "$Q/$d"; done
complete=yes
for d in active bounce corrupt defer deferred flush hold incoming maildrop pid private public \
         saved trace; do
  [ -d "$Q/$d" ] || complete=no
done
[ "$complete" = no ] || touch "$Q/quick-start"

# Postfix waits until a configuration file it reads is over a second old (it may still be being
# written): ~2 s before master even starts, right after the postconf edits above. They are done,
# so the files are dated back.
touch -d '10 seconds ago' /etc/postfix/main.cf /etc/postfix/master.cf
postfix start-fg &
master=$!
tries=0
until [ -s /var/spool/postfix/pid/master.pid ] && grep -q 'daemon started' "$LOG" 2>/dev/null; do
  if ! kill -0 "$master" 2>/dev/null || [ "$tries" -ge 300 ]; then
    echo "postfix did not start:" >&2
    cat "$LOG" >&2 2>/dev/null || true
    exit 1
  fi
  tries=$((tries + 1))
  sleep 0.1
done
postconf -n | sed 's/^/main.cf: /'
touch "$READY"
echo '{"ready": true}'
wait "$master"
