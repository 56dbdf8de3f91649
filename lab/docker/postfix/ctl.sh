#!/bin/sh
# What the harness runs in the Postfix sender container with `docker exec`; every wait is bounded.
#   ctl.sh ready SECONDS                 wait until run.sh has started Postfix
#   ctl.sh size                          print the byte size of the Postfix log
#   ctl.sh submit FROM RCPT              submit the base64 message in $TLSLAB_MESSAGE via sendmail
#   ctl.sh await SECONDS OFFSET N ERE    wait until N log lines after byte OFFSET match ERE, then
#                                        print every line after OFFSET (exit 1 on timeout)
#   ctl.sh idle SECONDS ADDRESS          wait until no SMTP connection to ADDRESS:25 is open
#   ctl.sh relay-user NAME               add NAME with the password in $TLSLAB_PASSWORD (read on
#                                        stdin by saslpasswd2, never echoed) to the relay's sasldb
set -eu

LOG=/var/log/postfix.log
READY=/run/tlslab-postfix.ready

deadline() { echo $(( $(date +%s%N) / 1000000 + $1 * 1000 )); }
expired() { [ $(( $(date +%s%N) / 1000000 )) -ge "$1" ]; }

case "${1:-}" in
  ready)
    until_ms=$(deadline "$2")
    until [ -e "$READY" ]; do
      if expired "$until_ms"; then echo "postfix not ready after $2 s" >&2; exit 1; fi
      sleep 0.05
    done
    ;;
  size)
    wc -c < "$LOG"
    ;;
  submit)
    printf %s "$TLSLAB_MESSAGE" | base64 -d | /usr/sbin/sendmail -f "$2" -i -- "$3"
    ;;
  await)
    until_ms=$(deadline "$2")
    start=$(( $3 + 1 ))
    while [ "$(tail -c +"$start" "$LOG" | grep -cE -- "$5" || true)" -lt "$4" ]; do
      if expired "$until_ms"; then tail -c +"$start" "$LOG"; exit 1; fi
      sleep 0.05
    done
    tail -c +"$start" "$LOG"
    ;;
  idle)
    until_ms=$(deadline "$2")
    while [ -n "$(ss -Htn state connected exclude time-wait dst "$3:25")" ]; do
      if expired "$until_ms"; then ss -Htn dst "$3:25"; exit 1; fi
      sleep 0.05
    done
    ;;
  relay-user)
    printf %s "$TLSLAB_PASSWORD" | saslpasswd2 -p -c -f /etc/sasldb2 -u "$(postconf -h myhostname)" "$2"
    chown root:postfix /etc/sasldb2
    chmod 0640 /etc/sasldb2
    ;;
  *)
    echo "usage: ctl.sh ready|size|submit|await|idle|relay-user ..." >&2
    exit 2
    ;;
esac
