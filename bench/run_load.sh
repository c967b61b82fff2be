#!/usr/bin/env bash
# Runs the end-to-end load driver (bench/load_driver.cpp) as docs/performance.md quotes it: on
# SQLite, then on PostgreSQL 15 in a throwaway cluster when pg_virtualenv exists (Debian's
# postgresql-common; as root it runs initdb as postgres and the driver as root with PG* set).
# pg_virtualenv turns fsync off; we turn it back on (PG_FSYNC=off to compare), so that both
# backends commit durably as the services do (SQLite: WAL with synchronous=FULL).
# Each backend runs the vectors and attach workloads with one vector per request, then vectors
# with five. Builds nothing: MCIM_LOAD names the driver (default build/bench/mcim_load; scripts/
# build makes it). Extra arguments go to every run, e.g. bench/run_load.sh --duration 30; later
# options win. Exit status: 0 when every run had no error.
set -uo pipefail
cd "$(dirname "$0")/.."
driver="$(realpath "${MCIM_LOAD:-build/bench/mcim_load}")"
if [ ! -x "$driver" ]; then
  echo "run_load.sh: $driver is not built (scripts/build, or set MCIM_LOAD)" >&2
  exit 2
fi
common=(--clients 8 --server-threads 2 --duration 10 --warmup 2)
status=0

run() {
  echo "== mcim_load $*"
  "$@" || status=1
  echo
}

for count in 1 5; do
  workload=both
  [ "$count" -gt 1 ] && workload=vectors
  run "$driver" --db sqlite --workload "$workload" --count "$count" "${common[@]}" "$@"
done

if command -v pg_virtualenv >/dev/null; then
  for count in 1 5; do
    workload=both
    [ "$count" -gt 1 ] && workload=vectors
    run pg_virtualenv -v 15 -o "fsync=${PG_FSYNC:-on}" "$driver" --db postgresql:// \
      --workload "$workload" --count "$count" "${common[@]}" "$@"
  done
else
  echo "run_load.sh: no pg_virtualenv (apt-get install postgresql-common): PostgreSQL skipped"
fi
exit "$status"
