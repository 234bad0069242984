#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: the age CLI and sqlite3
# (apt), litestream 0.5.17 (scripts/install-litestream.sh) and moto's S3 server (pip, into
# .tools/moto, git-ignored; tests/it/s3.rs runs it from there) and prometheus-client's text
# parser (pip, into .tools/prometheus-client, for tests/it/metrics.rs). For the checks of deploy/
# (tests/it/deploy), it also tries to install systemd-analyze (package systemd) and strace
# (apt), and kubernetes-validate (pip, into .tools/kubernetes-validate); for the man page test
# (tests/it/cli.rs), man-db and groff-base (apt). Those are optional: a failed install is a
# warning and the checks that need the tool print "SKIPPED". Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
missing=()
command -v age >/dev/null || missing+=(age)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
optional=()
command -v systemd-analyze >/dev/null || optional+=(systemd)
command -v strace >/dev/null || optional+=(strace)
command -v man >/dev/null || optional+=(man-db)
command -v groff >/dev/null || optional+=(groff-base)
if [ ${#missing[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
  $sudo_cmd apt-get update -qq >&2 || [ ${#missing[@]} -eq 0 ]
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >&2
fi
if [ ${#optional[@]} -gt 0 ]; then
  echo "installing ${optional[*]} with apt-get (optional: for the checks of deploy/ and the man page)" >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${optional[@]}" >&2 ||
    echo "warning: could not install ${optional[*]}: the checks that need them skip" >&2
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

# prometheus-client's text parser checks what `/metrics` serves (tests/it/metrics.rs).
pc_version=0.26.0
pc_dir="$root/.tools/prometheus-client"
if [ -d "$pc_dir/prometheus_client-$pc_version.dist-info" ] &&
  [ -f "$pc_dir/prometheus_client/parser.py" ]; then
  echo "prometheus-client $pc_version at $pc_dir" >&2
else
  echo "installing prometheus-client $pc_version into $pc_dir" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$pc_dir" --upgrade "prometheus-client==$pc_version" >&2
fi

# kubernetes-validate checks deploy/kubernetes*.yaml against the Kubernetes schemas it bundles
# (offline); optional.
kv_version=1.37.0
kv_dir="$root/.tools/kubernetes-validate"
if [ -d "$kv_dir/kubernetes_validate-$kv_version.dist-info" ] &&
  [ -f "$kv_dir/kubernetes_validate/__init__.py" ]; then
  echo "kubernetes-validate $kv_version at $kv_dir" >&2
else
  echo "installing kubernetes-validate $kv_version into $kv_dir (optional)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$kv_dir" --upgrade "kubernetes-validate==$kv_version" >&2 ||
    echo "warning: could not install kubernetes-validate: the manifest schema check skips" >&2
fi
