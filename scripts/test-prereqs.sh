#!/usr/bin/env bash
# Things the test suite needs beyond Python packages. Idempotent; fast when all is in place.
set -euo pipefail
PY=${1:-.venv/bin/python}

# PostgreSQL: the machines start it before the session; if it is down, try to start it.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
fi

# Headless Chromium for the dashboard test (Debian's package; Playwright drives it), installed
# while the integration venvs are made below.
install_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the dashboard test..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing and cannot be installed here (needs root and apt-get); the dashboard test will say so"
  fi
}
install_chromium &
chromium=$!

# The tools whose pins clash with ours get their own venvs (.venvs/TOOL) for tests/integrations.
bash "$(dirname "$0")/integration-venvs.sh" "$PY" || echo "some integration tools did not install; their tests will skip"
wait "$chromium" || { echo "installing chromium failed (apt-get, above)" >&2; exit 1; }
