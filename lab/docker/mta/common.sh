#!/bin/sh
# What every real-MTA sender container answers (sourced by lab/docker/<mta>/ctl.sh, which sets
# LOG, the MTA's log file, and READY, the marker its run.sh creates); every wait is bounded.
#   ctl.sh ready SECONDS                 wait until run.sh has started the MTA
#   ctl.sh size                          print the byte size of the MTA's log
#   ctl.sh await SECONDS OFFSET N ERE    wait until N log lines after byte OFFSET match ERE, then
#                                        print every line after OFFSET (exit 1 on timeout)
#   ctl.sh idle SECONDS ADDRESS          wait until no SMTP connection to ADDRESS:25 is open

deadline() { echo $(( $(date +%s%N) / 1000000 + $1 * 1000 )); }
expired() { [ $(( $(date +%s%N) / 1000000 )) -ge "$1" ]; }

mta_common() {
  case "${1:-}" in
    ready)
      until_ms=$(deadline "$2")
      until [ -e "$READY" ]; do
        if expired "$until_ms"; then echo "the MTA is not ready after $2 s" >&2; exit 1; fi
        sleep 0.05
      done
      ;;
    size)
      wc -c < "$LOG"
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
    *)
      echo "usage: ctl.sh ready|size|await|idle|submit ..." >&2
      exit 2
      ;;
  esac
}
