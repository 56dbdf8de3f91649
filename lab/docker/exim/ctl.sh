#!/bin/sh
# What the harness runs in the Exim sender container with `docker exec`; every wait is bounded.
#   ctl.sh ready|size|await|idle ...     as in lab/docker/mta/common.sh, on Exim's mainlog
#   ctl.sh submit FROM RCPT              submit the base64 message in $TLSLAB_MESSAGE to Exim
#                                        (its sendmail interface; delivery starts in background)
#   ctl.sh retry ID                      force one delivery attempt of message ID now (exim -M)
#   ctl.sh queue ID                      print the message's queue entry (exim -bp), if queued
#   ctl.sh remove ID                     remove the message from the queue (exim -Mrm)
set -eu

LOG=/var/log/exim4/mainlog
READY=/run/tlslab-exim.ready
. /opt/tlslab-mta/common.sh

case "${1:-}" in
  submit)
    printf %s "$TLSLAB_MESSAGE" | base64 -d | /usr/sbin/exim4 -f "$2" -i -- "$3"
    ;;
  retry)
    /usr/sbin/exim4 -M "$2"
    ;;
  queue)
    /usr/sbin/exim4 -bp | grep -A 2 -F -- "$2" || echo "not in the queue"
    ;;
  remove)
    /usr/sbin/exim4 -Mrm "$2" >/dev/null 2>&1 || true
    ;;
  *)
    mta_common "$@"
    ;;
esac
