#!/usr/bin/env bash
# The GPU checks of one device session (about 7 minutes on one H200), run from a copy of the repo:
#   benchmarks/gpu_check.sh PACK.npz STACK.npz OUTDIR
# 1. the U-Net on LUNG1-001's prepared slices (bench_gpu_unet.py: model time and whole process, median of 3);
# 2. `python -m lungseg train --data PACK --folds loo --device cuda --time-budget 6`: the leave-one-patient-out
#    fold models and the final model side by side (bf16, data-loader workers); then each fold model's Dice on
#    its held-out patient's slices in the pack (model grid, no post-processing).
# The fold models come back to be measured and calibrated where the scans can be read:
#   mkdir -p M.run/loo-P M.run/final; cp OUT/loo-P.pt M.run/loo-P/model.pt; cp OUT/final.pt M.run/final/model.pt
#   python -m lungseg train --data <the scans> LIDC --out M.pt --folds loo --resume
# PACK: the pack a CPU run wrote (M.run/pack.npz); STACK: bench_gpu_unet.py --prepare.
set -u
PACK=$1; STACK=$2; OUT=$3
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  $PY -c "import torch, numpy, scipy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)"; } > "$OUT/gpu.txt" 2>&1
timeout 120 $PY benchmarks/bench_gpu_unet.py "$STACK" --repeat 3 --device cuda > "$OUT/unet.txt" 2>&1
RUN=/tmp/gpu-train; rm -rf $RUN
( time timeout ${TRAIN_TIMEOUT:-420} $PY -m lungseg train --data "$PACK" --out $RUN/m.pt --folds loo --device cuda \
    --time-budget ${BUDGET_MIN:-6} --workers ${WORKERS:-4} ) > "$OUT/train.log" 2>&1
for f in $RUN/m.run/*.log; do echo "== $f"; tail -n 4 "$f"; done >> "$OUT/train.log" 2>&1
timeout 60 $PY benchmarks/bench_gpu_unet.py --pack-dice "$PACK" $RUN/m.run --device cuda >> "$OUT/unet.txt" 2>&1
for d in $RUN/m.run/loo-*; do cp "$d/model.pt" "$OUT/$(basename $d).pt"; done
cp $RUN/m.run/final/model.pt "$OUT/final.pt" 2>/dev/null
cp $RUN/m.md "$OUT/m.md" 2>/dev/null
ls -la "$OUT"
