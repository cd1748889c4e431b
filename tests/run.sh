#!/usr/bin/env bash
# Install everything the tests need, then run them: `bash tests/run.sh [pytest args]`.
# System packages (Debian): mosquitto, mosquitto-clients, nats-server (the clustered broker), openssl (test certificates), chromium (browser
# tasks and the dashboard's tests; Playwright drives it at /usr/bin/chromium) and fonts-wqy-microhei (Chinese screenshots). Python packages: a .venv with the project and its test extras. PostgreSQL on 127.0.0.1:5432 is used when it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# A Chinese font, so the dashboard's Chinese screenshots (tests/artifacts/screenshots) are legible.
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" = none ]; then
    echo "tests/run.sh: please install: ${missing[*]} (apt-get install ${missing[*]})" >&2
  else
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
