#!/usr/bin/env bash
# The F2 load driver (docs/performance.md "Full provisioning, services and devices apart"): starts
# the five services with `mcim up` in one process and provisions a fleet through them with
# `mcim demo --system` in another, then reports provisionings per second, p50/p99 per step (from
# the demo's JSON) and CPU time per device split by role.
#
# CPU by role: the services' threads are named "<role>-<what>" (ro-http-0, ro-notify-1, vno-gw-a,
# docs/operations.md "Thread names"); the CPU time of every thread (/proc/<up>/task/*/schedstat)
# is read before and after the demo and summed per role. "other" is the rest of the process's
# own total (utime+stime of /proc/<up>/stat): its main thread, unnamed threads and threads that
# ended during the run, so the roles and "other" add up to the process (to a tick or two). "devices" is the demo process (the
# agents, TREs, owner and factory clients), from the shell's `times`. "postgres" is the cluster's
# postmaster with its children (live backends, plus those already reaped through cutime/cstime),
# when PG* points at a cluster whose data directory this user can read (pg_virtualenv).
# Two windows: the whole demo (manufacture, registration, activation, F2), CPU per device from the
# factory to operational as in the earlier in-process figures; and F2 alone, from the moment the
# demo notes that provisioning begins (`mcim demo --phases`) to its end: CPU per provisioning.
#
# With --change-operator the demo then moves every device to the second SHO (F4, `mcim demo
# --change-operator`): operator changes per second, p50/p99 per step, and CPU per change (from the
# demo's "change" phase to its end; the F2 window then ends where the changes begin).
#
#   bench/run_f2.sh [--devices N] [--concurrency C] [--db postgresql://...] [--dir D] [--json]
#                   [--change-operator] [--fleet-dir DIR]
#   bench/run_f2.sh --pg ...     # the same under `pg_virtualenv -v 15 -o fsync=on`, --db postgresql://
#
# --fleet-dir puts the simulated devices' files (their TREs' state, counters and audit logs) under
# DIR instead of the system's temporary directory: /dev/shm keeps their flushes off the disk the
# services' databases flush to (a real fleet flushes its own flash), so that what is measured is
# the services' (docs/performance.md says which figures were taken so).
# MCIM names the binary (default build/src/cli/mcim); it builds nothing. Without --dir the system
# lives in a temporary directory removed at the end. Exit: the demo's (0 when every device ended
# operational), 2 for bad options or a system that did not start.
set -uo pipefail
cd "$(dirname "$0")/.."
mcim="$(realpath "${MCIM:-build/src/cli/mcim}")"
devices=1000 concurrency=32 db="" dir="" json=0 pg=0 change=0 fleet_dir=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --db) db="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --json) json=1; shift ;;
    --fleet-dir) fleet_dir="$2"; shift 2 ;;
    --pg) pg=1; shift ;;
    --change-operator) change=1; shift ;;
    *) echo "run_f2.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -n "$fleet_dir" ] && [ ! -d "$fleet_dir" ]; then
  echo "run_f2.sh: --fleet-dir $fleet_dir is not a directory" >&2
  exit 2
fi
if [ ! -x "$mcim" ]; then
  echo "run_f2.sh: $mcim is not built (scripts/build, or set MCIM)" >&2
  exit 2
fi
if [ "$pg" = 1 ]; then
  rest=()
  for a in "${args[@]}"; do [ "$a" = --pg ] || rest+=("$a"); done
  exec pg_virtualenv -v 15 -o "fsync=${PG_FSYNC:-on}" "$0" "${rest[@]}" --db postgresql://
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/mcim-f2-XXXXXX")"
[ -n "$dir" ] || dir="$work/system"
up_pid="" demo_pid=""
# mcim up stops on SIGTERM once its handlers return; one still making a large batch (a demo
# stopped during manufacture) holds it up, so it gets 30 s, then SIGKILL.
cleanup() {
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null
  if [ -n "$up_pid" ]; then
    kill -TERM "$up_pid" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$up_pid" 2>/dev/null
    wait "$up_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # so that cleanup stops mcim up
hz="$(getconf CLK_TCK)"

# "<tid> <comm> <ns>" for every thread of a process: its time on a CPU in nanoseconds (the 1st
# field of schedstat). Not utime+stime of task/*/stat: those are whole ticks, and with 30 threads
# their truncation alone is ~10 % of a short run.
threads_cpu() {
  local t comm ns
  for t in /proc/"$1"/task/*; do
    comm="$(cat "$t/comm" 2>/dev/null)" || continue
    read -r ns _ <"$t/schedstat" 2>/dev/null || continue
    echo "${t##*/} $comm $ns"
  done
}
# utime+stime of a whole process in ticks (its ended threads included; comm is the 2nd field of
# stat in parentheses, utime and stime the 14th and 15th); with "children", plus the children it
# reaped (cutime+cstime).
process_cpu() {
  sed 's/^.*) //' /proc/"$1"/stat 2>/dev/null |
    awk -v c="${2:-}" '{ s = $12 + $13 + (c ? $14 + $15 : 0) } END { print s + 0 }'
}
# The PostgreSQL cluster's CPU in ticks: its postmaster, what it reaped, its live children.
postgres_cpu() {
  local pm total p
  pm="$(head -1 "$pg_data/postmaster.pid" 2>/dev/null)" || return
  total="$(process_cpu "$pm" children)"
  for p in $(cat /proc/"$pm"/task/*/children 2>/dev/null); do
    total=$((total + $(process_cpu "$p")))
  done
  echo "$total"
}
# The user and system time of the children this shell has waited for, in seconds, from the
# output of bash's `times` in a file (in a $(...) subshell it would count the subshell's only).
children_seconds() {
  tail -1 "$1" | awk '{ for (i = 1; i <= 2; ++i) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } print s }'
}

pg_data=""
if [ -n "$db" ] && command -v psql >/dev/null; then
  pg_data="$(psql -Atc 'show data_directory' 2>/dev/null)"
  [ -r "$pg_data/postmaster.pid" ] || pg_data=""
fi

echo '{"log_level": "warn"}' >"$work/up-options.json"
up_args=(up --config "$work/up-options.json" --dir "$dir")
[ -n "$db" ] && up_args+=(--db "$db")
"$mcim" "${up_args[@]}" >"$work/up.out" 2>"$work/up.err" &
up_pid=$!
for _ in $(seq 1 1200); do
  grep -q "owner token file:" "$work/up.out" 2>/dev/null && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "run_f2.sh: mcim up exited:" >&2
    cat "$work/up.err" >&2
    up_pid=""
    exit 2
  fi
  sleep 0.1
done

threads_cpu "$up_pid" >"$work/before.txt"
up_before="$(process_cpu "$up_pid")"
pg_before="$(postgres_cpu)"
times >"$work/times.before"
# In the background, so that a SIGTERM to this script is handled at once, not after the demo.
demo_args=(demo --system "$dir" --devices "$devices" --concurrency "$concurrency" --json
  --phases "$work/phases")
[ "$change" = 1 ] && demo_args+=(--change-operator)
# The demo keeps its devices in a temporary directory of its own, under TMPDIR.
TMPDIR="${fleet_dir:-${TMPDIR:-/tmp}}" "$mcim" "${demo_args[@]}" >"$work/demo.json" \
  2>"$work/demo.err" &
demo_pid=$!
# As the demo notes phase $1: every process's CPU so far (the demo's own, with the EAP peers it
# reaped), into $work/$2.txt and up_$2, pg_$2, dev_$2; ${2}_taken=1. Nothing once the demo ended.
snapshot_at() {
  printf -v "${2}_taken" 0
  while kill -0 "$demo_pid" 2>/dev/null; do
    if grep -q "^$1 " "$work/phases" 2>/dev/null; then
      threads_cpu "$up_pid" >"$work/$2.txt"
      printf -v "up_$2" '%s' "$(process_cpu "$up_pid")"
      printf -v "pg_$2" '%s' "$(postgres_cpu)"
      printf -v "dev_$2" '%s' "$(process_cpu "$demo_pid" children)"
      printf -v "${2}_taken" 1
      return
    fi
    sleep 0.05
  done
}
snapshot_at provision f2
f4_taken=0
[ "$change" = 1 ] && snapshot_at change f4
wait "$demo_pid"
status=$?
demo_pid=""
times >"$work/times.after"
dev_before="$(children_seconds "$work/times.before")"
dev_after="$(children_seconds "$work/times.after")"
threads_cpu "$up_pid" >"$work/after.txt"
up_after="$(process_cpu "$up_pid")"
pg_after="$(postgres_cpu)"
if [ "$status" -ne 0 ] && ! jq -e .devices "$work/demo.json" >/dev/null 2>&1; then
  echo "run_f2.sh: mcim demo failed (exit $status):" >&2
  cat "$work/demo.err" "$work/demo.json" >&2
  exit "$status"
fi

# ms of CPU per device: per role (threads named <role>-...), other, postgres, devices, between a
# threads file taken before ($1) and one taken after ($5, default after.txt). $2: the services'
# process ticks in the window, $3 the cluster's ticks (empty: no cluster), $4 the devices' seconds.
cpu_per_device() {
  awk -v hz="$hz" -v n="$devices" -v total="$2" -v pg="$3" -v dev="$4" '
  FNR == NR { before[$1] = $3; next }
  {
    role = $2; sub(/-.*/, "", role)
    if (role !~ /^(supplier|ro|vno|sho|pva)$/) next
    ns[role] += $3 - before[$1]; named += $3 - before[$1]
  }
  END {
    ms = 1000 / hz / n  # per tick
    other = total * ms - named / 1e6 / n
    if (other > -0.005 && other < 0.005) other = 0  # not "-0.00"
    printf "{\"supplier\":%.2f,\"ro\":%.2f,\"vno\":%.2f,\"sho\":%.2f,\"pva\":%.2f,\"other\":%.2f,",
      ns["supplier"] / 1e6 / n, ns["ro"] / 1e6 / n, ns["vno"] / 1e6 / n, ns["sho"] / 1e6 / n,
      ns["pva"] / 1e6 / n, other
    printf "\"services\":%.2f,\"postgres\":%s,\"devices\":%.2f}\n", total * ms,
      pg == "" ? "null" : sprintf("%.2f", pg * ms), dev * 1000 / n
  }' "$1" "${5:-$work/after.txt}"
}
cpu_json="$(cpu_per_device "$work/before.txt" "$((up_after - up_before))" \
  "${pg_before:+$((${pg_after:-0} - pg_before))}" \
  "$(awk -v a="$dev_before" -v b="$dev_after" 'BEGIN { print b - a }')")"
f2_json=null f4_json=null
if [ "$f4_taken" = 1 ]; then
  # The devices' CPU in F4: the demo's total less what it had used when F4 began.
  f4_json="$(cpu_per_device "$work/f4.txt" "$((up_after - up_f4))" \
    "${pg_f4:+$((${pg_after:-0} - pg_f4))}" \
    "$(awk -v b="$dev_after" -v a="$dev_before" -v f="$dev_f4" -v hz="$hz" \
      'BEGIN { print b - a - f / hz }')")"
fi
if [ "$f2_taken" = 1 ] && [ "$f4_taken" = 1 ]; then
  f2_json="$(cpu_per_device "$work/f2.txt" "$((up_f4 - up_f2))" \
    "${pg_f2:+$((${pg_f4:-0} - pg_f2))}" \
    "$(awk -v f4="$dev_f4" -v f2="$dev_f2" -v hz="$hz" 'BEGIN { print (f4 - f2) / hz }')" \
    "$work/f4.txt")"
elif [ "$f2_taken" = 1 ]; then
  f2_json="$(cpu_per_device "$work/f2.txt" "$((up_after - up_f2))" \
    "${pg_f2:+$((${pg_after:-0} - pg_f2))}" \
    "$(awk -v b="$dev_after" -v a="$dev_before" -v f="$dev_f2" -v hz="$hz" \
      'BEGIN { print b - a - f / hz }')")"
fi

report="$(jq -c --argjson cpu "$cpu_json" --argjson f2 "$f2_json" --argjson f4 "$f4_json" --arg db "${db:+postgresql}" --argjson c "$concurrency" \
  '{backend: (if $db == "" then "sqlite" else $db end), devices, concurrency: $c, provisioned,
    failed, throughput_per_s, provision_seconds, cpu_ms_per_device: $cpu,
    cpu_ms_per_provisioning: $f2, steps, failures}
   + (if .change then {change: (.change + {cpu_ms_per_change: $f4})} else {} end)' \
  "$work/demo.json")"
if [ "$json" = 1 ]; then
  echo "$report"
else
  jq -r '"F2 through `mcim up` (\(.backend)): \(.provisioned) of \(.devices) devices provisioned, \(.concurrency) at a time, in \(.provision_seconds * 100 | round / 100) s: \(.throughput_per_s * 10 | round / 10) provisionings/s",
    "", "step          count     p50 ms     p99 ms",
    (.steps[] | "\(.step | . + " " * (12 - length)) \(.count | tostring | " " * (6 - length) + .) \(.p50_ms * 100 | round / 100 | tostring | " " * (10 - length) + .) \(.p99_ms * 100 | round / 100 | tostring | " " * (10 - length) + .)"),
    "", "CPU ms per device (the whole demo: F0, F1, F7, F2):",
    (.cpu_ms_per_device | to_entries[] | "  \(.key | . + " " * (9 - length)) \(.value // "n/a")"),
    "", "CPU ms per provisioning (F2 alone, from attach_pcid to attach_imsi):",
    (.cpu_ms_per_provisioning // {} | to_entries[] | "  \(.key | . + " " * (9 - length)) \(.value // "n/a")"),
    (if .failed > 0 then "failures: \(.failures)" else empty end),
    (if .change then
      (.change | "", "F4, every device moved to the second SHO: \(.changed) changed, \(.failed) failed, in \(.change_seconds * 100 | round / 100) s: \(.changes_per_s * 10 | round / 10) operator changes/s",
        "", "step          count     p50 ms     p99 ms",
        (.steps[] | "\(.step | . + " " * (12 - length)) \(.count | tostring | " " * (6 - length) + .) \(.p50_ms * 100 | round / 100 | tostring | " " * (10 - length) + .) \(.p99_ms * 100 | round / 100 | tostring | " " * (10 - length) + .)"),
        "", "CPU ms per change (F4 alone):",
        (.cpu_ms_per_change // {} | to_entries[] | "  \(.key | . + " " * (9 - length)) \(.value // "n/a")"),
        (if .failed > 0 then "change failures: \(.failures)" else empty end))
     else empty end)' <<<"$report"
fi
exit "$status"
