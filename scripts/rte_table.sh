#!/usr/bin/env bash
# The RTE comparison of issues 4 and 9: 7 methods x 3 seeds with one fine-tuned teacher, CPU budget
# 'table' (stage 1: 1 epoch, stage 2: 1 epoch with dev evaluation every 50 updates, max length
# 128), then the mean/std table.   bash scripts/rte_table.sh TEACHER_CKPT [OUT] [GLUE_DIR]
# METHODS="cr_ild bert_emd" runs only those (finished runs are reused anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=$1
OUT=${2:-runs/table}
GLUE_DIR=${3:-${GLUE_DIR:-../shared/data/glue}}
for SEED in 42 43 44; do  # the paper's seeds
  for METHOD in ${METHODS:-finetune kd pkd tinybert l_ild cr_ild bert_emd}; do
    python scripts/run_pipeline.py --task RTE --method $METHOD --seed $SEED --budget table \
      --glue-dir "$GLUE_DIR" --out "$OUT" --teacher "$TEACHER" --quiet > /dev/null
    echo "done $METHOD seed $SEED"
  done
done
python scripts/summarize_reports.py "$OUT" --task RTE
