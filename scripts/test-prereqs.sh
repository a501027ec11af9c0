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
