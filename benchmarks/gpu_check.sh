#!/usr/bin/env bash
# What is run on a lent GPU (device tool), in parts named on the command line (all, in this
# order, when none is named); a session picks those its ~15 minutes allow:
#   src         the SRC training throughput against snnTorch LIF, alone on the GPU (issue 9)
#   psmnist     psMNIST with and without --pad 1000 at a matched budget: four hybrids and the
#               LRU side by side, and three hybrids and the LRU on a variable delay (--pad-min
#               0), each for the minutes left before second 480 (issue 6)
#   runs        the benchmarks/spiking_runs.py runs named in GPU_RUNS (space-separated), side by
#               side, beside the compiled Triton tests
#   tests       the Triton tests compiled (no interpreter); with `runs`, beside them
#   scan        benchmarks/scan_cuda.py --sweep, alone on the GPU (issue 3)
#   compile     benchmarks/compile.py: training steps eager and compiled, alone on the GPU
#   precision   benchmarks/precision.py: training steps in fp32 and bf16 autocast, alone on it
#   dispatch    benchmarks/dispatch.py: the scan's and fused MRU's autograd, eager Function
#               against custom operators, host cost and small training steps, alone on it
# Carry .whl (wheels: accelerated-scan for `scan`, snntorch for `src`) and .gpu_data (a copy of
# ../shared/data/mnist and/or fashion-mnist; ../shared does not travel). Set BISTABLE_COMMIT to
# what `python -c 'from benchmarks.common import commit; print(commit())'` prints on the machine
# with the checkout (the .git on the GPU machine may be stale; that function adds +dirty). Logs,
# this run's results and the runs' metrics land in $OUT/gpu_<parts>.tar, so that calls for
# different parts in one command keep their own.
#
#     BISTABLE_COMMIT=<that commit> GPU_RUNS="NAME ..." bash benchmarks/gpu_check.sh runs tests scan
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
LOG=/tmp/gpu_logs
START=$SECONDS
PARTS=${*:-src psmnist runs tests scan compile precision dispatch}
GPU_RUNS=${GPU_RUNS:-}
has() { [[ " $PARTS " == *" $1 "* ]]; }
if has runs && [[ -z "$GPU_RUNS" ]]; then
    echo "gpu_check.sh: the part 'runs' needs GPU_RUNS (names from benchmarks/spiking_runs.py)" >&2
    exit 2
fi
mkdir -p "$OUT" "$LOG" runs/src
export PYTHONUNBUFFERED=1 PYTHONPATH=src
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv \
    | tee "$LOG/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")

if has src; then  # the anchor of issue 9: 4 hidden layers of 256, T = 220, batch 128
    timeout 100 python3 benchmarks/src.py --device cuda --tp-batch 128 --tp-rounds 7 \
        --datasets --name "src_gpu_$GPU" >"$LOG/src.log" 2>&1
    echo "src benchmark: exit $?"; grep "^|" "$LOG/src.log" | tail -n 6
fi

if has psmnist; then  # one process per cell (launch-bound, they share the GPU)
    PSMNIST="--params 596746 --device cuda --data-dir .gpu_data/mnist --runs runs/memory_tasks_gpu"
    # 0.8: the pilots measure the window throughput (compilation left out) while others still
    # compile, so the shared GPU looks faster to them than it will be; a run past the timeout is lost
    MINUTES=$(python3 -c "print(round(0.8 * (480 - 90 - $SECONDS + $START) / 60, 1))")
    echo "psMNIST minutes per run: $MINUTES"
    for exp in psmnist psmnist-pad1000 psmnist-varpad1000; do
        models="hybrid hybrid-late hybrid-detached hybrid-detached-penalty lru"
        [[ $exp == psmnist-varpad1000 ]] && models="hybrid hybrid-penalty10 hybrid-late-penalty10 lru"
        for model in $models; do
            timeout $((480 - SECONDS + START)) python3 benchmarks/memory_tasks.py \
                --experiments $exp --models $model $PSMNIST --minutes "$MINUTES" \
                --name "part_${exp}_$model" >"$LOG/psmnist_${exp}_$model.log" 2>&1 &
        done
    done
fi

if has runs; then  # each as `bistable train <arguments(NAME)> --out runs/src/NAME`
    for name in $GPU_RUNS; do
        args=$(python3 -c "import sys; sys.path.insert(0, '.')
from benchmarks.spiking_runs import arguments; print(' '.join(arguments('$name')))")
        timeout 300 python3 -m bistable train $args --out "runs/src/$name" \
            >"$LOG/run_$name.log" 2>&1 &
    done
fi

if has tests; then
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_scan_triton.py \
        tests/test_fused_mru.py tests/test_src_triton.py tests/test_tasks.py \
        >"$LOG/tests.log" 2>&1
    echo "tests: exit $?"; tail -n 8 "$LOG/tests.log"
fi

wait
if has psmnist; then
    python3 benchmarks/memory_tasks.py --experiments psmnist psmnist-pad1000 \
        --models hybrid hybrid-late hybrid-detached hybrid-detached-penalty lru \
        $PSMNIST --minutes "$MINUTES" --name "memory_tasks_psmnist_$GPU" >/dev/null 2>&1
    echo "psMNIST table: exit $?"; grep "^| ps" "results/memory_tasks_psmnist_$GPU.md"
    python3 benchmarks/memory_tasks.py --experiments psmnist-varpad1000 \
        --models hybrid hybrid-penalty10 hybrid-late-penalty10 lru \
        $PSMNIST --minutes "$MINUTES" --name "memory_tasks_psmnist_varpad_$GPU" >/dev/null 2>&1
    echo "psMNIST variable-delay table: exit $?"
    grep "^| ps" "results/memory_tasks_psmnist_varpad_$GPU.md"
fi
if has runs; then
    for name in $GPU_RUNS; do
        echo "$name: $(grep -o '"accuracy": [0-9.]*' "runs/src/$name/metrics.json" | head -n 1)"
        tail -n 2 "$LOG/run_$name.log"
    done
fi

if has scan; then  # alone on the GPU: bandwidth figures
    timeout 240 python3 benchmarks/scan_cuda.py --sweep >"$LOG/scan.log" 2>&1
    echo "scan benchmark: exit $?"; grep -v "^{" "$LOG/scan.log" | tail -n 60
fi

if has compile; then  # alone on the GPU
    timeout 300 python3 benchmarks/compile.py --device cuda --name "compile_$GPU" \
        >"$LOG/compile.log" 2>&1
    echo "compile benchmark: exit $?"; grep "^|" "$LOG/compile.log" | tail -n 6
fi

if has precision; then  # alone on the GPU
    timeout 200 python3 benchmarks/precision.py --device cuda --name "precision_$GPU" \
        >"$LOG/precision.log" 2>&1
    echo "precision benchmark: exit $?"; grep "^|" "$LOG/precision.log" | tail -n 6
fi

if has dispatch; then  # alone on the GPU
    timeout 120 python3 benchmarks/dispatch.py --device cuda --name "dispatch_$GPU" \
        >"$LOG/dispatch.log" 2>&1
    echo "dispatch benchmark: exit $?"; grep "^|" "results/dispatch_$GPU.md"
fi

# what comes back is at most 16 MiB a file: logs, this run's results and the runs' metrics (the
# checkpoints stay there: a wide SRC's weights and optimiser state alone can pass that)
find runs -name metrics.json >"$LOG/files" 2>/dev/null
find results -newer "$LOG/gpu.txt" -type f >>"$LOG/files"
tar cf "$OUT/gpu_${PARTS// /_}.tar" "$LOG" -T "$LOG/files"
echo "done in $((SECONDS - START)) s"
