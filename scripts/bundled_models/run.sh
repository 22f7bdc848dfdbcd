#!/usr/bin/env bash
# Train the cMIM and MIM twins side by side on one GPU for MINUTES each; results go to $OUT.
# Usage: OUT=DIR [INIT=/tmp EXTRA="cmim pretrain options"] run.sh MINUTES (README.md).
set -u
MINUTES=${1:-7.5}
mkdir -p "$OUT" && OUT=$(realpath "$OUT")
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/../.." PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"
PEAK=${PEAK:-$(python3 train_gpu.py peak)}
echo "bf16 matmul peak: $PEAK FLOP/s"
python3 train_gpu.py cmim 1.0 "$MINUTES" "$PEAK" "$OUT" ${EXTRA:-} > "$OUT/cmim.log" 2>&1 &
python3 train_gpu.py mim 0.0 "$MINUTES" "$PEAK" "$OUT" ${EXTRA:-} > "$OUT/mim.log" 2>&1 &
sleep 30; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait
for f in "$OUT"/*.log; do echo "== $f"; grep -v "^step" "$f" | tail -n 12; grep "^step" "$f" | tail -n 3; done
ls -la "$OUT"
