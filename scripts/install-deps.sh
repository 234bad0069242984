#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: the age CLI and sqlite3
# (apt), and litestream 0.5.17 (scripts/install-litestream.sh). Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
missing=()
command -v age >/dev/null || missing+=(age)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing ${missing[*]} with apt-get" >&2
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >&2
fi
"$root/scripts/install-litestream.sh"
