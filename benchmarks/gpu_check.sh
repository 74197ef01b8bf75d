#!/usr/bin/env bash
# The one script run on a lent GPU (device tool), within about 8 minutes:
#   1. the SRC training throughput against snnTorch LIF, alone on the GPU (benchmarks/src.py,
#      issue 9);
#   2. in the background from then on: psMNIST with and without --pad 1000 at a matched budget,
#      three hybrids (side by side; with detach_input BMRUs; the same with --write-penalty 100)
#      and the LRU, each run as many steps as fit in the time left (issue 6);
#   3. the Triton tests compiled (no interpreter), beside them.
# The SRC recipe's GPU runs (issue 9) are in benchmarks/spiking_runs.py (RUNS, "-gpu").
# The scan kernels' figures (issue 3) are a separate run: python3 benchmarks/scan_cuda.py --sweep.
# Carry .whl (the wheels of accelerated-scan and snntorch) and .gpu_data (a copy of
# ../shared/data/mnist and fashion-mnist under .gpu_data; ../shared does not travel). Set
# BISTABLE_COMMIT (the .git there may be stale). Logs, results and the runs' metrics land in
# $OUT/gpu.tar; the summary lines are printed.
#
#     BISTABLE_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
LOG=/tmp/gpu_logs
START=$SECONDS
mkdir -p "$OUT" "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH=src
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv \
    | tee "$LOG/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")

# the SRC anchor of issue 9, alone on the GPU: 4 hidden layers of 256, T = 220, batch 128
timeout 100 python3 benchmarks/src.py --device cuda --tp-batch 128 --tp-rounds 7 --datasets \
    --name "src_gpu_$GPU" >"$LOG/src.log" 2>&1
echo "src benchmark: exit $?"; grep "^|" "$LOG/src.log" | tail -n 5

# psMNIST: one process per cell (they are launch-bound and share the GPU), each training for the
# minutes that leave 90 s before second 480 for its pilot and evaluation; tabulated at the end
PSMNIST="--params 596746 --device cuda --data-dir .gpu_data/mnist --runs runs/memory_tasks_gpu"
MINUTES=$(python3 -c "print(round((480 - 90 - $SECONDS + $START) / 60, 1))")
echo "psMNIST minutes per run: $MINUTES"
for exp in psmnist psmnist-pad1000; do
    for model in hybrid hybrid-detached hybrid-detached-penalty lru; do
        timeout $((480 - SECONDS + START)) python3 benchmarks/memory_tasks.py --experiments $exp \
            --models $model $PSMNIST --minutes "$MINUTES" --name "part_${exp}_$model" \
            >"$LOG/psmnist_${exp}_$model.log" 2>&1 &
    done
done

timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_src_triton.py \
    tests/test_tasks.py tests/test_fused_mru.py tests/test_scan_triton.py >"$LOG/tests.log" 2>&1
echo "tests: exit $?"; tail -n 8 "$LOG/tests.log"

wait
python3 benchmarks/memory_tasks.py --experiments psmnist psmnist-pad1000 \
    --models hybrid hybrid-detached hybrid-detached-penalty lru \
    $PSMNIST --minutes "$MINUTES" --name "memory_tasks_psmnist_$GPU" >/dev/null 2>&1
echo "psMNIST table: exit $?"; grep "^| ps" "results/memory_tasks_psmnist_$GPU.md"
find runs -name metrics.json >"$LOG/files"
tar cf "$OUT/gpu.tar" "$LOG" results/src_gpu_* results/memory_tasks_psmnist_* -T "$LOG/files"
echo "done in $((SECONDS - START)) s"
