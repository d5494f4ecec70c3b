#!/usr/bin/env bash
# Runs stage-III arms from a queue file, one at a time (one thread), popping the
# first line each time so the queue can be edited while it runs:
#   OMP_NUM_THREADS=1 bench/queue_stream.sh runs/mn10_t12 6 queueA.txt [wait-pid]
# Each line: "<variant spec>@<seed>" as bench/recipe_streams.sh takes, or
# "cmd:<a command line>" run as it is.
set -uo pipefail
run=$1; epochs=$2; queue=$3; wait_pid=${4:-}
if [ -n "$wait_pid" ]; then while kill -0 "$wait_pid" 2>/dev/null; do sleep 5; done; fi
while true; do
  arm=$(flock "$queue" bash -c 'head -n 1 "$0"; sed -i 1d "$0"' "$queue")
  [ -z "$arm" ] && break
  case $arm in
    cmd:*) bash -c "${arm#cmd:}" || echo "failed: $arm" >&2 ;;    # a whole command line
    *) bench/recipe_streams.sh "$run" "$epochs" "$arm" || echo "failed: $arm" >&2 ;;
  esac
done
