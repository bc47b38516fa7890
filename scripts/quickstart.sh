#!/usr/bin/env bash
# The README's main job on the offline default: the packaged all-MiniLM-L6-v2 and GLUE RTE.
#   bash scripts/quickstart.sh [VENV_DIR] [GLUE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
GLUE_DIR=${2:-${GLUE_DIR:-../shared/data/glue}}
# shellcheck disable=SC1091
. "$VENV/bin/activate"
OUT=${OUT:-runs/quickstart}
mkdir -p "$OUT"
if [ ! -f "$OUT/minilm/model.pt" ]; then
  python scripts/convert_hf_bert.py minilm "$OUT/minilm"
fi
echo "converted all-MiniLM-L6-v2 -> $OUT/minilm (GLUE data: $GLUE_DIR)"
