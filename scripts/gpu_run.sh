#!/usr/bin/env bash
# The whole GPU job in one call: CUDA tests, the study's training (study/02), clusters (03) and
# sweep (04) in the given profile, the benchmarks, the lessons (notebooks/, timed), and
# everything they wrote packed for the way back.
#
#   bash scripts/gpu_run.sh OUTDIR [PROFILE]      # PROFILE: full (default) or ci (a dry run)
#
# Run it on the GPU machine after the data staging of ../shared/device/README.md (CIFAR10_ROOT
# and PYTHONPATH exported, papermill and ipykernel installed). Every step has a time limit cut
# from one budget (GPU_BUDGET_S, default 520 s), so the packing at the end always happens, and
# a failing step is logged and skipped rather than ending the job. Notebook 05 is not run here:
# its latencies are measurements of the CPU the tutorial runs on.
#
# OUTDIR receives at most 8 files: gpu_run.log (what happened, step by step), steps.tar.gz (each
# step's log) and outputs.tar.gz (checkpoints/resnet20.pt, results/, img/, notebooks/, study/,
# the executed notebooks and their logs under build/run/).
set -u
OUTDIR=$(realpath -m "${1:?usage: gpu_run.sh OUTDIR [PROFILE]}")
PROFILE=${2:-full}
BUDGET=${GPU_BUDGET_S:-520}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR/steps" build/run
START=$(date +%s)
LOG="$OUTDIR/gpu_run.log"

say() { echo "$(date +%H:%M:%S) [$(( $(date +%s) - START )) s] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: run COMMAND for at most LIMIT_S seconds (less if the budget,
# keeping 20 s for packing, runs out first); its output goes to steps/NAME.log.
step() {
    local name=$1 limit=$2 left
    shift 2
    left=$(( BUDGET - 20 - ($(date +%s) - START) ))
    (( left < limit )) && limit=$left
    if (( limit < 10 )); then say "$name: skipped, budget spent"; return 1; fi
    say "$name: start (limit ${limit} s): $*"
    local t0=$(date +%s) rc
    timeout --kill-after=5 "$limit" "$@" >"$OUTDIR/steps/$name.log" 2>&1
    rc=$?
    say "$name: rc=$rc in $(( $(date +%s) - t0 )) s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
    tail -n 3 "$OUTDIR/steps/$name.log" | sed 's/^/    /' | tee -a "$LOG"
    return $rc
}

say "profile $PROFILE, budget $BUDGET s"
{ nvidia-smi -L; $PY -c "import torch, sklearn; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '',
'sklearn', sklearn.__version__)"; } 2>&1 | tee -a "$LOG"

step test_gpu 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py
if step train 330 $PY scripts/run_series.py --study --profile "$PROFILE" --only 02; then
    # 03 runs k-means on the CPU cores while 04 sweeps on the GPU: they do not depend on each other
    step clusters 200 $PY scripts/run_series.py --study --profile "$PROFILE" --only 03 &
    step sweep 200 $PY scripts/run_series.py --study --profile "$PROFILE" --only 04
    wait
else
    say "training failed: 03 and 04 not run (they analyse its checkpoint)"
fi
if [ "$PROFILE" = ci ]; then  # a dry run writes nothing into results/
    BENCH=(--train-images 1000 --steps 1 --rounds 1 --seed-steps 5) JSON=$OUTDIR
else
    BENCH=(--seed-steps 100) JSON=results
fi
step bench_train 60 $PY -m helpers.study.bench train "${BENCH[@]}" --json "$JSON/bench_train.json"
step bench_sweep 60 $PY -m helpers.study.bench sweep --json "$JSON/bench_sweep.json"
# the lessons on the GPU, timed (results/series.json: lesson_gpu); a dry run uses their ci profile
step lessons 150 $PY scripts/run_series.py --profile "$([ "$PROFILE" = ci ] && echo ci || echo auto)"

say "packing"
tar czf "$OUTDIR/outputs.tar.gz" --ignore-failed-read checkpoints/resnet20.pt results img \
    notebooks study build/run 2>>"$LOG"
tar czf "$OUTDIR/steps.tar.gz" -C "$OUTDIR" steps && rm -rf "$OUTDIR/steps"
say "done"
