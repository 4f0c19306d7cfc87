#!/usr/bin/env bash
# Train the automatic model's leave-one-patient-out fold models and its final model at once: four
# processes sharing one GPU (or the CPU), each training every variant on the same batches.
#   benchmarks/fit_loo_gpu.sh PACK OUTDIR [BUDGET_S] [STEPS]
# PACK: python -m lungseg.tumour.pack --out PACK.  Then: python benchmarks/loo.py --runs OUTDIR/VARIANT …
set -u
PACK=$1; OUT=$2; BUDGET=${3:-330}; STEPS=${4:-6000}
PYTHON=${PYTHON:-python3}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
fold() {
  name=$1; shift
  "$PYTHON" -m lungseg.tumour.fit "$PACK" --out "$OUT/$name" --budget-s "$BUDGET" --steps "$STEPS" \
    --workers "${WORKERS:-3}" --threads 2 --batch-size "${BATCH:-32}" ${EXTRA:-} "$@" > "$OUT/$name.log" 2>&1 &
}
fold loo-LUNG1-001 --hosts LUNG1-002 LUNG1-003 --variants "${FOLD_VARIANTS:-b16c1,b16c0,b24c1}"
fold loo-LUNG1-002 --hosts LUNG1-001 LUNG1-003 --variants "${FOLD_VARIANTS:-b16c1,b16c0,b24c1}"
fold loo-LUNG1-003 --hosts LUNG1-001 LUNG1-002 --variants "${FOLD_VARIANTS:-b16c1,b16c0,b24c1}"
fold final --hosts LUNG1-001 LUNG1-002 LUNG1-003 --variants "${FINAL_VARIANTS:-b16c1,b24c1}"
wait; tail -n 3 "$OUT"/*.log
