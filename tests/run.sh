#!/usr/bin/env bash
# Install everything the tests need, then run them: `bash tests/run.sh [pytest args]`.
# Two passes: the tests not marked `serial` on two pytest-xdist workers, each module whole on one
# worker, the slowest modules first (tests/conftest.py); then the `serial` ones (they assert how
# soon something happens) alone. The pytest args go to both; the exit status is the worse one.
# System packages (Debian): mosquitto, mosquitto-clients, nats-server (the clustered broker), openssl (test certificates), chromium (browser
# tasks and the dashboard's tests; Playwright drives it at /usr/bin/chromium) and fonts-wqy-microhei (Chinese screenshots). Python packages: a .venv with the project and its test extras. PostgreSQL on 127.0.0.1:5432 is used when it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# systemd-analyze checks the device service's unit (tests/integration/test_device_service.py); nothing is started.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
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

status=0
.venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --serial=exclude "$@" || status=$?
case $status in 0|1|5) ;; *) exit $status ;; esac  # interrupted, usage or internal error: no second pass
serial=0
.venv/bin/python -m pytest --serial=only "$@" -n 0 || serial=$?
# 5 means no test selected: fine for one pass (say, `-m "not integration"` has no serial test), not for both.
if [ $status = 5 ] || { [ $status = 0 ] && [ $serial != 5 ]; }; then status=$serial; fi
exit $status
