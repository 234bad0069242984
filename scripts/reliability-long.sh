#!/usr/bin/env bash
# The long variants of the reliability tests (2 minutes of litestream being killed under load,
# 30 s of load around a killed supervisor, 500 start/stop cycles; the no-row-lost scenarios on
# SQLite's defaults, a minute each), the side-by-side comparison with bare litestream over
# TRIALS trials (default 10), then the fuzz targets.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-deps.sh"
RIP_LONG_TESTS=1 cargo test --locked --test it -- reliability no_row_lost --include-ignored --test-threads 1
cargo build --release --locked
python3 "$root/scripts/compare-restarts.py" "${TRIALS:-10}"
"$root/scripts/fuzz.sh" "${FUZZ_SECONDS:-60}"
