#!/usr/bin/env bash
# Big databases: `rip-litestream verify` and `restore` against bare `litestream restore` + one
# `PRAGMA integrity_check`, with a file replica (scripts/bench-big.py does the measuring).
# BENCH_BIG_SIZES picks the sizes (default "100M 1G"), BENCH_BIG_SAMPLES the runs per measure
# (default 3). Run time on 2 cores: about 1 minute for 100M, about 8 for 1G (mostly making the
# database and litestream's first snapshot of it); 5G adds about 40 minutes. Needs about 4x
# the largest size free under target/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-litestream.sh" >/dev/null
command -v sqlite3 >/dev/null || { echo "sqlite3 is missing: run scripts/install-deps.sh" >&2; exit 2; }
cargo build --release --locked --bin rip-litestream 2>/dev/null
exec python3 "$root/scripts/bench-big.py"
