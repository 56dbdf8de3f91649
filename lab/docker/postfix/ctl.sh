#!/bin/sh
# What the harness runs in the Postfix sender container with `docker exec`; every wait is bounded.
#   ctl.sh ready|size|await|idle ...     as in lab/docker/mta/common.sh, on the Postfix log
#   ctl.sh submit FROM RCPT              submit the base64 message in $TLSLAB_MESSAGE via sendmail
#   ctl.sh relay-user NAME               add NAME with the password in $TLSLAB_PASSWORD (read on
#                                        stdin by saslpasswd2, never echoed) to the relay's sasldb
set -eu

LOG=/var/log/postfix.log
READY=/run/tlslab-postfix.ready
. /opt/tlslab-mta/common.sh

case "${1:-}" in
  submit)
    printf %s "$TLSLAB_MESSAGE" | base64 -d | /usr/sbin/sendmail -f "$2" -i -- "$3"
    ;;
  relay-user)
    printf %s "$TLSLAB_PASSWORD" | saslpasswd2 -p -c -f /etc/sasldb2 -u "$(postconf -h myhostname)" "$2"
    chown root:postfix /etc/sasldb2
    chmod 0640 /etc/sasldb2
    ;;
  *)
    mta_common "$@"
    ;;
esac
