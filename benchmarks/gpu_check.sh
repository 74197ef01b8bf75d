#!/usr/bin/env bash
# The one script run on a lent GPU (device tool): the Triton tests compiled (no interpreter), then
# benchmarks/scan_cuda.py and the SRC training throughput against snnTorch LIF (benchmarks/src.py).
# Logs and results land in $OUT (default /tmp/gpu_out); short tables are printed last. Carry .whl
# (the wheels of accelerated-scan and snntorch) for the peer columns.
#
#     bash benchmarks/gpu_check.sh            # from the repository root
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=src
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv \
    | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider \
    tests/test_scan_triton.py tests/test_fused_mru.py tests/test_src_triton.py >"$OUT/tests.log" 2>&1
echo "tests: exit $?"; tail -n 15 "$OUT/tests.log"

timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/scan_cuda.py --sweep "$@" >"$OUT/bench.log" 2>&1
echo "benchmark: exit $?"
cp results/scan_gpu_* "$OUT/" 2>/dev/null
grep -v "^{" "$OUT/bench.log" | tail -n 60

# the SRC anchor of issue 9: 4 hidden layers of 256, T = 220, batch 128
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
timeout "${SRC_TIMEOUT:-150}" python3 benchmarks/src.py --device cuda --tp-batch 128 \
    --tp-rounds 9 --datasets --name "src_gpu_$GPU" >"$OUT/src.log" 2>&1
echo "src benchmark: exit $?"
cp results/src_gpu_* "$OUT/" 2>/dev/null
grep "^|" "$OUT/src.log" | tail -n 6
