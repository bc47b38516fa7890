#!/usr/bin/env bash
# The README's main job on the offline default: the packaged all-MiniLM-L6-v2 as the base,
# GLUE RTE, CR-ILD into a 3-layer student on the 'cpu' budget, ending with the report table.
#   bash scripts/quickstart.sh [VENV_DIR] [GLUE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
GLUE_DIR=${2:-${GLUE_DIR:-../shared/data/glue}}
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ ! -f "$GLUE_DIR/RTE/train.tsv" ]; then
  echo "quickstart: no RTE data in $GLUE_DIR (set GLUE_DIR; see README 'GLUE data')" >&2
  exit 2
fi
time python scripts/run_pipeline.py --task RTE --method cr_ild --budget cpu \
  --glue-dir "$GLUE_DIR" --out "${OUT:-runs/quickstart}" --student-layers 3
