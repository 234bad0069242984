#!/bin/sh
# A stand-in application for the deploy examples: writes a row every second to /data/app.db and
# exits cleanly on SIGTERM (rip-litestream passes it on, then stops litestream with a final sync).
set -eu
db=${APP_DB:-/data/app.db}
sqlite3 "$db" "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS beats (at TEXT NOT NULL);" >/dev/null
trap 'exit 0' TERM INT
while :; do
  sqlite3 "$db" "INSERT INTO beats (at) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ'));"
  sleep 1 &
  wait $!
done
