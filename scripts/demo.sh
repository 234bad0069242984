#!/usr/bin/env bash
# The main job on a fresh machine: installs what it needs, then in demo/ (git-ignored) creates an
# age key, an app.db with a config saved encrypted inside it, replicates it live with litestream
# under rip-litestream while rows are written, stops (final sync), restores the replica and
# compares the rows.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
cd "$root"
cargo build --quiet --bin rip-litestream
rip="$root/target/debug/rip-litestream"
litestream=$("$root/scripts/install-litestream.sh" 2>&1 | sed -n 's/.* at //p' | tail -n 1)

demo="$root/demo"
rm -rf "$demo"
mkdir -p "$demo"
export RIP_DB="$demo/app.db" RIP_AGE_KEY="$demo/age.key"

step() { printf '\n== %s\n' "$*" >&2; }

step "an application database with 100 rows"
sqlite3 "$RIP_DB" "PRAGMA journal_mode=WAL; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100)
  INSERT INTO notes (body) SELECT 'note ' || i FROM n;" >/dev/null

step "init: a new age key, a default config replicating app.db to demo/replica, saved encrypted"
"$rip" init --replica "$demo/replica"

step "config list"
"$rip" config list

step "config check (ours, then litestream's own parser)"
"$rip" config check

step "run: litestream supervised, config handed over in memory"
"$rip" run 2>"$demo/run.log" &
sup=$!
for _ in $(seq 1 200); do grep -q "litestream ready" "$demo/run.log" && break; sleep 0.05; done
grep -q "litestream ready" "$demo/run.log" || { cat "$demo/run.log" >&2; exit 1; }

step "writing 400 more rows while it replicates"
for i in $(seq 1 4); do
  sqlite3 "$RIP_DB" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100)
    INSERT INTO notes (body) SELECT 'batch $i row ' || i FROM n;"
  sleep 0.2
done

step "SIGTERM: sync, then litestream's final sync"
kill -TERM "$sup"
wait "$sup"
tail -n 3 "$demo/run.log" >&2

step "restore the replica and compare"
"$litestream" restore -o "$demo/restored.db" "file://$demo/replica" >/dev/null 2>&1
src=$(sqlite3 "$RIP_DB" "SELECT count(*), sum(length(body)), group_concat(id) FROM notes" | md5sum)
dst=$(sqlite3 "$demo/restored.db" "SELECT count(*), sum(length(body)), group_concat(id) FROM notes" | md5sum)
rows=$(sqlite3 "$demo/restored.db" "SELECT count(*) FROM notes")
check=$(sqlite3 "$demo/restored.db" "PRAGMA integrity_check")
if [ "$src" = "$dst" ] && [ "$check" = ok ]; then
  echo "OK: restored $rows rows, identical to the source, integrity_check ok" >&2
else
  echo "FAILED: restored copy differs from the source (rows: $rows, integrity: $check)" >&2
  exit 1
fi
