#!/bin/sh
# What every real-MTA sender container answers (sourced by lab/docker/<mta>/ctl.sh, which sets
# LOG, the MTA's log file, and READY, the marker its run.sh creates); every wait is bounded.
#   ctl.sh ready SECONDS                 wait until run.sh has started the MTA
#   ctl.sh size                          print the byte size of the MTA's log
#   ctl.sh await SECONDS OFFSET N ERE    block until N log lines after byte OFFSET match ERE, then
#                                        print every line after OFFSET (exit 1 on timeout)
#   ctl.sh idle SECONDS ADDRESS          wait until no SMTP connection to ADDRESS:25 is open

deadline() { echo $(( $(date +%s%N) / 1000000 + $1 * 1000 )); }
expired() { [ $(( $(date +%s%N) / 1000000 )) -ge "$1" ]; }

# Block until N lines after byte OFFSET match ERE (tail -f follows the log through inotify, so
# nothing wakes while the log is quiet; without inotify it re-reads every 50 ms), bounded by
# SECONDS; then print every line after OFFSET. Returns 1 on timeout.
await_lines() {
  fifo=$(mktemp -u /tmp/tlslab-await.XXXXXX)
  mkfifo -m 600 "$fifo"
  tail -s 0.05 -c +"$(( $2 + 1 ))" -f "$LOG" > "$fifo" &
  follower=$!
  status=0
  # counted into a variable, not to /dev/null: GNU grep takes output to /dev/null as -q
  matched=$(timeout "$1" grep -m "$3" -cE -- "$4" < "$fifo") || status=1
  kill "$follower" 2>/dev/null || true
  wait "$follower" 2>/dev/null || true
  rm -f "$fifo"
  tail -c +"$(( $2 + 1 ))" "$LOG"
  [ "$status" -eq 0 ] && [ "$matched" -ge "$3" ]
}

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
      await_lines "$2" "$3" "$4" "$5"
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
