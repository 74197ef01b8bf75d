"""Registers, spills and shared memory of the Triton kernels on a Hopper GPU, found without one.

    python benchmarks/kernel_resources.py [--name kernel_resources]

Each kernel (the scan's and the fused MRU's forward and backward, fp32 and bf16 storage) is
compiled for sm_90 through Triton's whole pipeline on this machine (ptxas and cuobjdump come with
the triton wheel) at the library's default tile shape and at those of
``benchmarks/scan_cuda.py --sweep``; ``cuobjdump -res-usage`` reads what each needs. Registers
cap how many programs an SM holds (65 536 a multiprocessor); stack bytes are spills to local
memory. Run without ``TRITON_INTERPRET``. Writes results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, run_main, summary, write_results  # noqa: E402

NAMES = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16"}


def compile_kernel(fn, dtype: str, constexprs: dict, num_warps: int):
    """``fn`` compiled for sm_90 with pointers to ``dtype`` storage (the flags int32, the
    published maps in the accumulation dtype) and the given constexprs."""
    acc = "fp64" if dtype == "fp64" else "fp32"
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name == "sync_ptr":
            signature[name] = "*i32"
        elif name in ("carry_ptr", "deps_ptr"):
            signature[name] = "*" + acc
        elif name.endswith("_ptr"):
            signature[name] = "*" + dtype
        else:
            signature[name] = "i32"  # the kernels' scalars; floats arrive as tensors
    src = ASTSource(fn=fn, signature=signature, constexprs={
        (fn.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def tile_constexprs(dtype: str, block_t: int, block_d: int, **flags) -> dict:
    """The constexprs of a tiled kernel (scan or fused MRU)."""
    acc = tl.float64 if dtype == "fp64" else tl.float32
    return {**flags, "ACC": acc, "BLOCK_T": block_t, "BLOCK_D": block_d}


def resources(compiled) -> dict:
    """``{"registers", "stack", "shared"}`` of a compiled kernel, by cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        out = subprocess.run([str(tool), "-res-usage", str(cubin)], capture_output=True,
                             text=True, check=True).stdout
    found = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED):(\d+)", out)}
    return {"registers": found["REG"], "stack": found["STACK"], "shared": found["SHARED"]}


def rows() -> list[dict]:
    from benchmarks.scan_cuda import MRU_SWEEP, SWEEP
    from bistable.scan import triton_bmru as tb
    from bistable.scan import triton_scan as ts

    out = []
    # the backward with da, and without it (an `a` that needs no gradient: need_da=False)
    scan_kernels = (("forward", ts._fwd_kernel, {}),
                    ("backward", ts._bwd_kernel, {"NEED_DA": True}),
                    ("backward, constant a", ts._bwd_kernel, {"NEED_DA": False}))
    for dtype, shapes in SWEEP.items():
        default = tuple(ts.default_config(1024, dtype))
        tiles = [default, *(s for s in shapes if s != default)]
        for direction, fn, extra in scan_kernels:
            flags = dict(HAS_H0=True, REVERSE=False, COMPLEX=False, **extra)
            for cfg in tiles:
                compiled = compile_kernel(fn, NAMES[dtype], tile_constexprs(
                    NAMES[dtype], cfg[0], cfg[1], **flags), cfg[2])
                out.append({"kernel": f"scan {direction}", "dtype": NAMES[dtype],
                            "tiles": cfg, "default": cfg == default, **resources(compiled)})
    for direction, fn in (("forward", tb._fwd_kernel), ("backward", tb._bwd_kernel)):
        default = tuple(tb.default_config(1024, backward=direction == "backward"))
        for cfg in [default, *(s for s in MRU_SWEEP if s != default)]:
            compiled = compile_kernel(fn, "fp32", tile_constexprs(
                "fp32", cfg[0], cfg[1], HAS_S0=True, HAS_EPS=False), cfg[2])
            out.append({"kernel": f"fused MRU {direction}", "dtype": "fp32", "tiles": cfg,
                        "default": cfg == default, **resources(compiled)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--name", default="kernel_resources")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        p.error("unset TRITON_INTERPRET: the kernels must be compiled")
    data = rows()
    md = (header("Registers and spills of the Triton kernels on sm_90 (compiled on the CPU)")
          + f"\nTriton {triton.__version__}, target sm_90 (H100 / H200), ptxas and cuobjdump of "
          "the triton wheel; flags: the scan with h0, forward order, real (its backward with "
          "`da`, and without it for an `a` that needs no gradient); the fused MRU with "
          "s0, ε = 0. Tiles (block_t, block_d, num_warps); *values a thread*: block_t · block_d "
          "/ (32 · num_warps) of each tile; *programs (warps) an SM*: as many as the registers "
          "allow (65 536 a multiprocessor; at most 32 programs, 64 warps): the loads one SM can "
          "keep in flight. Stack bytes are spills to local memory.\n\n"
          "| kernel | dtype | tiles | default | values a thread | registers | stack (spills) "
          "| programs (warps) an SM |\n|---|---|---|---|---:|---:|---:|---:|\n")
    for r in data:
        bt, bd, nw = r["tiles"]
        per_sm = min(32, 64 // nw, 65536 // (r["registers"] * 32 * nw))
        md += (f"| {r['kernel']} | {r['dtype']} | {r['tiles']} | "
               f"{'yes' if r['default'] else ''} | {bt * bd // (32 * nw)} | {r['registers']} | "
               f"{r['stack']} | {per_sm} ({per_sm * nw}) |\n")
    print(write_results(args.name, md, data))


if __name__ == "__main__":
    run_main(main)
