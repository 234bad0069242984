#!/usr/bin/env bash
# The long variants of the reliability tests (2 minutes of litestream being killed under load,
# 30 s of load around a killed supervisor, 500 start/stop cycles), then the fuzz targets.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-deps.sh"
RIP_LONG_TESTS=1 cargo test --locked --test it reliability -- --test-threads 1
"$root/scripts/fuzz.sh" "${FUZZ_SECONDS:-60}"
