"""Every Triton kernel compiles for a Hopper GPU (sm_90), on any machine.

The CPU tests run the kernels under ``TRITON_INTERPRET=1``, which executes them as Python and
misses what only the compiler checks (a variable given another type or shape in a runtime
branch, say). Here each kernel goes through Triton's whole pipeline (TTIR, TTGIR, LLVM IR, PTX,
and ptxas, which the triton wheel carries) for the constexpr combinations the library launches,
in a subprocess free of the interpreter, and must fit the shared memory of an H100 / H200. No GPU
is needed; one is not used.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from triton_kernels import require_triton

require_triton()

ROOT = Path(__file__).resolve().parent.parent

# (module, kernel, storage dtype, constexprs); ACC is float64 for float64 storage, else float32
VARIANTS = [
    *[("bistable.scan.triton_scan", k, dtype, dict(HAS_H0=h0, REVERSE=rev, COMPLEX=cplx))
      for k in ("_fwd_kernel",)
      for dtype, cplx in (("fp32", False), ("bf16", False), ("fp64", False), ("fp32", True))
      for h0, rev in ((True, False), (False, True))],
    # the backward with and without da (NEED_DA), each in every storage dtype
    *[("bistable.scan.triton_scan", "_bwd_kernel", dtype,
       dict(HAS_H0=h0, REVERSE=rev, COMPLEX=cplx, NEED_DA=da))
      for dtype, cplx in (("fp32", False), ("bf16", False), ("fp64", False), ("fp32", True))
      for h0, rev, da in ((True, False, True), (False, True, False))],
    *[("bistable.scan.triton_bmru", k, dtype, dict(HAS_S0=s0, HAS_EPS=eps))
      for k in ("_fwd_kernel", "_bwd_kernel") for dtype in ("fp32", "fp64")
      for s0, eps in ((True, True), (False, False))],
    *[("bistable.units.src_triton", "_fwd_kernel", "fp32", dict(T=7, CURRENT=cur))
      for cur in (False, True)],
    *[("bistable.units.src_triton", "_bwd_kernel", "fp32",
       dict(T=7, CURRENT=cur, DETACH=det, HAS_GI=gi))
      for cur, det, gi in ((False, False, True), (True, True, False))],
]

# each variant with the launch shape the library picks for 1024 channels (src_triton: its BLOCK)
COMPILE = textwrap.dedent("""
    import importlib, json, sys
    import torch
    from benchmarks.kernel_resources import compile_kernel, tile_constexprs

    SHARED = 232448  # bytes of shared memory a program may use on an H100 / H200
    DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16}
    failures = []
    for module, kernel, dtype, constexprs in json.loads(sys.argv[1]):
        mod = importlib.import_module(module)
        fn = getattr(mod, kernel)
        if "BLOCK_T" in fn.arg_names:
            storage = torch.complex64 if constexprs.get("COMPLEX") else DTYPES[dtype]
            cfg = (mod.default_config(1024, storage, kernel == "_bwd_kernel")
                   if "HAS_S0" in constexprs else mod.default_config(1024, storage))
            constexprs = tile_constexprs(dtype, cfg.block_t, cfg.block_d, **constexprs)
            num_warps = cfg.num_warps
        else:
            constexprs["BLOCK"], num_warps = mod.BLOCK, 4
        try:
            compiled = compile_kernel(fn, dtype, constexprs, num_warps)
        except Exception as exc:  # report them all, then fail
            failures.append(f"{module}.{kernel} {dtype} {constexprs}: {exc}")
            continue
        if compiled.metadata.shared > SHARED:
            failures.append(f"{module}.{kernel} {dtype} {constexprs}: needs "
                            f"{compiled.metadata.shared} bytes of shared memory, over {SHARED}")
    print("\\n\\n".join(failures))
    sys.exit(1 if failures else 0)
""")


def _compiler_env(cache) -> dict:
    """This process's environment without the interpreter, the project importable, and a
    Triton cache of the test's own."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}", TRITON_CACHE_DIR=str(cache),
               TRITON_DEFAULT_FP_FUSION="1")
    return env


@pytest.mark.parametrize("module", sorted({v[0] for v in VARIANTS}))
def test_kernels_compile_for_sm90(module, tmp_path):
    variants = [v for v in VARIANTS if v[0] == module]
    env = _compiler_env(tmp_path)
    done = subprocess.run([sys.executable, "-c", COMPILE, json.dumps(variants)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_kernel_resources_reads_registers_and_spills(tmp_path):
    """benchmarks/kernel_resources.py: cuobjdump's figures of one compiled kernel."""
    code = textwrap.dedent("""
        import json
        from benchmarks.kernel_resources import compile_kernel, resources, tile_constexprs
        from bistable.scan import triton_scan as ts
        flags = dict(HAS_H0=False, REVERSE=False, COMPLEX=False)
        small = compile_kernel(ts._fwd_kernel, "fp32", tile_constexprs("fp32", 16, 32, **flags), 4)
        large = compile_kernel(ts._fwd_kernel, "fp32", tile_constexprs("fp32", 64, 256, **flags), 2)
        print(json.dumps([resources(small), resources(large)]))
    """)
    env = _compiler_env(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    small, large = json.loads(done.stdout.splitlines()[-1])
    assert 0 < small["registers"] <= 255 and 0 < large["registers"] <= 255
    assert small["stack"] == 0 < large["stack"]  # 4 values a thread fit; 256 a thread spill
