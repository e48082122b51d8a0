#!/usr/bin/env bash
# GPU check, under 5 minutes on one GPU: steps/s of the per-band baseline vs BSRNN at batch 6,
# fp32 / bf16 autocast, eager / torch.compile; the reference recipe (baseline, PESQ computed in
# the step) vs ours; the PESQ wait share with and without --delayed-discriminator; async
# checkpoint stall.
#
#   benchmarks/gpu_check.sh                 # uses .venv/bin/python, or $PYTHON
#   PYTHON=python3 benchmarks/gpu_check.sh --pesq-workers 8
#   benchmarks/gpu_check.sh --device cpu --quick --budget-s 60    # CPU smoke test of this script
#
# Extra arguments go to benchmarks/gpu_check.py (see its --help). The Python part stops
# starting new variants after --budget-s (240 s); the timeout below is the hard stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv,noheader || true
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
exec timeout --signal=TERM --kill-after=10 285 "$PYTHON" benchmarks/gpu_check.py --device cuda "$@"
