#!/usr/bin/env bash
# Virtual environments of the tools whose pins clash with evertrain's (tests/integrations use them).
#
#   scripts/integration-venvs.sh [PYTHON] [TOOL...]      (default: every tool below)
#
# Each tool gets .venvs/TOOL (or $EVERTRAIN_TEST_VENVS/TOOL) with its packages; a venv whose
# requirement line is unchanged is left as it is, so a second run is fast. A tool that cannot
# install here is reported and skipped: its tests then skip with the reason printed.
set -uo pipefail
PY=${1:-python3}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${EVERTRAIN_TEST_VENVS:-$ROOT/.venvs}

# TOOL -> what goes into its venv. mlflow: the tracking server and `mlflow models serve`
# (evertrain itself only needs mlflow-skinny, which installs beside our pins; the server
# would downgrade pyarrow). kfp pins protobuf below ours; Prefect and Airflow pin fastapi,
# Feast pandas and tenacity, below what evertrain runs with; DVC brings a task queue and
# three git libraries, and evertrain drives its command line (`dvc`) rather than import it.
declare -A REQS=(
  [mlflow]="mlflow>=2.12 lightgbm scikit-learn"
  [kfp]="kfp>=2.7"
  [prefect]="prefect>=3.1"
  [airflow]="apache-airflow>=3.0"
  [dvc]="dvc>=3.50"
  [feast]="feast>=0.40"
)
TOOLS=("$@")
[ ${#TOOLS[@]} -eq 0 ] && TOOLS=("${!REQS[@]}")

# One tool's venv: created, or left as it is when its requirement line is unchanged.
make_venv() {
  local tool=$1 reqs=${REQS[$1]} venv=$DEST/$1 log=$DEST/$1.log started=$SECONDS
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$reqs" ]; then
    return 0
  fi
  echo "integration-venvs: creating $venv ($reqs)..."
  rm -rf "$venv"
  # shellcheck disable=SC2086
  if "$PY" -m venv "$venv" >"$log" 2>&1 \
    && "$venv/bin/python" -m pip install -q --upgrade pip >>"$log" 2>&1 \
    && "$venv/bin/python" -m pip install -q $reqs >>"$log" 2>&1; then
    echo "$reqs" >"$venv/.requirements"
    echo "integration-venvs: $tool ready in $((SECONDS - started))s"
  else
    echo "integration-venvs: $tool cannot install here (see $log); its tests will skip" >&2
    rm -rf "$venv"
  fi
}

mkdir -p "$DEST"
status=0
# Up to three tools at a time: an install mostly waits on the package index and the disk.
running=0
for tool in "${TOOLS[@]}"; do
  if [ -z "${REQS[$tool]:-}" ]; then echo "integration-venvs: unknown tool $tool" >&2; status=2; continue; fi
  make_venv "$tool" &
  running=$((running + 1))
  if [ "$running" -ge 3 ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
exit $status
