#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: the age CLI and sqlite3
# (apt), litestream 0.5.17 (scripts/install-litestream.sh) and moto's S3 server (pip, into
# .tools/moto, git-ignored; tests/it/s3.rs runs it from there). Safe to run again.
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

moto_version=5.2.5
moto_dir="$root/.tools/moto"
if [ -d "$moto_dir/moto-$moto_version.dist-info" ] && [ -f "$moto_dir/moto/server.py" ] &&
  [ -f "$moto_dir/flask/__init__.py" ]; then
  echo "moto $moto_version at $moto_dir" >&2
else
  echo "installing moto[server] $moto_version into $moto_dir" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$moto_dir" --upgrade "moto[server]==$moto_version" >&2
fi
