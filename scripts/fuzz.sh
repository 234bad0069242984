#!/usr/bin/env bash
# Runs the property-based fuzz targets (config validation, log-line parsing, redaction) with many
# more cases than the default suite, each bounded in time. Usage: scripts/fuzz.sh [SECONDS_EACH]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
cases=${FUZZ_CASES:-1000000}
cd "$root"
cargo test --locked --test it --no-run >/dev/null 2>&1
for target in validation_never_panics_on_structured_input validation_never_panics_on_arbitrary_bytes log_line_parsing_never_panics; do
  echo "== fuzz::$target (up to ${seconds}s, up to $cases cases)" >&2
  set +e
  PROPTEST_CASES=$cases timeout "$seconds" cargo test --locked --test it --release -- --exact "fuzz::$target" >/tmp/fuzz-$target.log 2>&1
  rc=$?
  set -e
  case $rc in
    0) echo "   passed: every case ran, no panic" >&2 ;;
    124) echo "   ran for ${seconds}s without a failure (time bound reached)" >&2 ;;
    *) echo "   FAILED (see /tmp/fuzz-$target.log)" >&2; tail -n 30 /tmp/fuzz-$target.log >&2; exit 1 ;;
  esac
done
