#!/usr/bin/env bash
# The GPU measurements the open issues ask for, in one command, on a machine with one CUDA GPU
# (about 10 minutes on an H200; each part prints its figures and keeps its logs under OUT):
#
#   bash scripts/gpu_check.sh [OUT=gpu_check] [MINUTES=2]
#
# 1. training samples/s across batch sizes (full RPC; data, fwd/bwd and framework shares);
# 2. the README's default run alone on the GPU, with the GPU's utilisation sampled twice a second;
# 3. 16 runs of that default at once on the one GPU: wall time against the single run's;
# 4. 9x9 Sudoku and Maze at TRM's width (d_model 512, two layers) for MINUTES each: samples/s
#    and the accuracy reached, with trainer.max_time (a time budget, stated as such).
# Compare each figure with docs/results/performance.md's CPU rows (ratios within one run).
set -euo pipefail
OUT=${1:-gpu_check}
MINUTES=${2:-2}
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || {
  echo "error: this python's torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}); this script needs one" >&2
  exit 2
}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
QUIET=(trainer=gpu trainer.enable_progress_bar=false logger=csv)

sample_util() {  # sample_util <file>: utilisation (%) every 500 ms until killed
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$1" &
  echo $!
}
mean_util() { awk '{s += $1; n++} END {if (n) printf "%.0f %% (%d samples)\n", s / n, n}' "$1"; }
seconds() { date +%s.%N; }
calc() { python -c "print(round($1, 2))"; }

echo "== 1. throughput, task=rpc, trainer=gpu"
python scripts/bench_throughput.py task=rpc trainer=gpu batch_sizes=128,1024,4096,16384 \
  | tee "$OUT/throughput.txt"

echo "== 2. the default run alone"
smi=$(sample_util "$OUT/util_one.txt")
t0=$(seconds)
rds-act-train "${QUIET[@]}" hydra.run.dir="$OUT/one" > "$OUT/one.log" 2>&1
t1=$(seconds)
kill "$smi" 2>/dev/null || true
one=$(calc "$t1 - $t0")
echo "one run: ${one} s; GPU utilisation $(mean_util "$OUT/util_one.txt")"
grep -o '"test/acc": [0-9.]*' "$OUT/one/metrics.json" || true

echo "== 3. 16 runs of the default at once on this GPU"
smi=$(sample_util "$OUT/util_16.txt")
t0=$(seconds)
for s in $(seq 0 15); do
  rds-act-train "${QUIET[@]}" seed="$s" hydra.run.dir="$OUT/sweep/$s" > "$OUT/sweep_$s.log" 2>&1 &
done
wait
t1=$(seconds)
kill "$smi" 2>/dev/null || true
many=$(calc "$t1 - $t0")
echo "16 runs: ${many} s = $(calc "$many / $one")x one run (target <= 2x);" \
     "GPU utilisation $(mean_util "$OUT/util_16.txt")"
grep -ho '"test/acc": [0-9.]*' "$OUT"/sweep/*/metrics.json | sort | uniq -c || true

echo "== 4. TRM's width for ${MINUTES} min each (a time budget, not TRM's sample budget)"
budget="00:00:$(printf %02d "$MINUTES"):00"
for task in "task=sudoku task.T_max=12 task.ood_T_max=12 act=fixed" "task=maze act=fixed"; do
  name=${task%% *}; name=${name#task=}
  # shellcheck disable=SC2086
  rds-act-train "${QUIET[@]}" $task model.d_model=512 model.n_heads=8 model.block_layers=2 \
    task.datamodule.batch_size=768 optimizer.lr=1e-4 +trainer.max_time="$budget" \
    trainer.max_epochs=1000 hydra.run.dir="$OUT/$name" > "$OUT/$name.log" 2>&1 || true
  python scripts/compute_to_accuracy.py "$OUT/$name" threshold=0.5 | tail -n 2 || true
  grep -o '"\(test/acc\|test/cell_acc\|train/samples\)": [0-9.e+]*' "$OUT/$name/metrics.json" || true
done
