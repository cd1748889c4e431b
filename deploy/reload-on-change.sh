#!/bin/sh
# Run a broker and send it SIGHUP (reload) whenever one of the files the controllers write
# changes. In compose the controllers cannot signal a process in another container, so this
# wrapper, inside the broker's container, does what FLEET_BROKER_PID_FILE does on one machine.
# POSIX sh (busybox in the nats and eclipse-mosquitto alpine images); polls every 2 seconds.
#
#   reload-on-change.sh "FILE [FILE...]" COMMAND [ARGUMENT...]
#
# A missing file counts as a state of its own: its appearance reloads too. SIGTERM and SIGINT
# are passed on to the broker; the wrapper exits with the broker's status.
set -u
files=$1
shift
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT

state() {
    for file in $files; do
        if [ -f "$file" ]; then cksum < "$file"; else echo "missing $file"; fi
    done
}

last=$(state)
while kill -0 "$child" 2>/dev/null; do
    sleep "${RELOAD_POLL_SECONDS:-2}"
    now=$(state)
    if [ "$now" != "$last" ]; then
        echo "reload-on-change: $files changed, reloading (SIGHUP to $child)" >&2
        kill -HUP "$child" 2>/dev/null
        last=$now
    fi
done
wait "$child"
