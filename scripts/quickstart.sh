#!/usr/bin/env bash
# The README's main job on the offline default: the packaged all-MiniLM-L6-v2 as the base,
# GLUE STS-B, a 3-layer student trained alone (finetune) and distilled by KD from the
# fine-tuned teacher with the supplementary QNLI pairs as extra (unlabelled) KD inputs, both
# on the 'cpu' budget in bf16 and about the same number of updates, ending with the table of
# teacher and students.
#   bash scripts/quickstart.sh [VENV_DIR] [GLUE_DIR] [SUPPLEMENTARY_PAIRS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
GLUE_DIR=${2:-${GLUE_DIR:-../shared/data/glue}}
PAIRS=${3:-${PAIRS_DIR:-$(dirname "$GLUE_DIR")/supplementary/QNLI-pairs}}
OUT=${OUT:-runs/quickstart}
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ ! -f "$GLUE_DIR/STS-B/train.tsv" ]; then
  echo "quickstart: no STS-B data in $GLUE_DIR (set GLUE_DIR; see README 'GLUE data')" >&2
  exit 2
fi
if [ ! -f "$PAIRS/train.tsv" ]; then
  echo "quickstart: no sentence pairs in $PAIRS (set PAIRS_DIR to a folder with train.tsv," \
    "header sentence1<TAB>sentence2; see README 'Two commands')" >&2
  exit 2
fi
# the first run converts the base, binarises STS-B and fine-tunes the teacher; the second
# reuses them (finished stages are reused on a rerun; an interrupted one resumes)
time python scripts/run_pipeline.py --task STS-B --method finetune --budget cpu --bf16 \
  --glue-dir "$GLUE_DIR" --out "$OUT" --student-layers 3 --quiet
# KD reads the pairs too (16,675 a epoch, 2.9x STS-B's 5,749): one epoch of stage 2 is about
# the updates of the student alone in its three (522 vs 540), so both get the same budget
time python scripts/run_pipeline.py --task STS-B --method kd --kd-data "$PAIRS" --budget cpu \
  --stage2-epochs 1 --bf16 --glue-dir "$GLUE_DIR" --out "$OUT" --student-layers 3 --quiet
python scripts/summarize_reports.py "$OUT" --task STS-B --baseline finetune
