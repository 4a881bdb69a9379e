#!/usr/bin/env bash
# System packages the test suite drives for real: Debian's chromium (browser
# tests: client apps, WebRTC, the dashboard) and nginx (deployment tests).
# Installs only what is missing; called by `EXTRAS=test scripts/install-local.sh`.
# Needs root (or passwordless sudo) on a Debian/Ubuntu machine; elsewhere it
# says what is missing and the tests that need it fail with that message.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-system: please install ${need[*]} (no apt-get here)" >&2
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
echo "install-test-system: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null || true
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# nginx's package starts a daemon on port 80; the tests run their own instances
if [[ " ${need[*]} " == *" nginx-light "* ]]; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || $sudo service nginx stop >/dev/null 2>&1 || pkill -x nginx || true
fi
