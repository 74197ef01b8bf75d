"""Speed of the Triton scan and fused MRU kernels on a CUDA GPU, against their ceilings and peers.

    python benchmarks/scan_cuda.py [--T 1024 4096 16384 65536] [--B 8] [--D 1024] [--sweep]

(``python benchmarks/scan.py --device cuda`` lands here too.) All times are medians of
``triton.testing.do_bench`` (CUDA events, L2 flushed between runs), in milliseconds.

1. The scan, fp32 and bf16, ``(B, T, D)``: ``linear_scan(backend="triton")`` forward and
   forward+backward against accelerated-scan 0.3.1 (``accelerated_scan.scalar.scan``, its own
   layout ``(B, D, T)``, prepared outside the timing) and against the device-to-device copy of a
   tensor of the same size (bandwidth counts bytes read + written). The forward moves 3 elements
   per step (a, b in, h out), the forward+backward 8 (+ grad_h, a, h in, da, db out).
2. ``--sweep``: the forward and backward kernels at T = 16384, fp32 and bf16, with other tile
   shapes; and the backward for an ``a`` that needs no gradient (``need_da=False``).
3. The fused MRU op (``fused_mru``: gates from ``c, β`` inside the kernels) at T = 4096 against the
   bare scan of the same shape, and against cuDNN ``nn.GRU`` of the same width; also the BMRU layer
   with its input projection (``Linear(D, 2D)`` → ``c, β``), TF32 allowed as cuDNN does by default.

Writes ``results/scan_gpu_<gpu>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import header, positive_int, run_main, summary, write_results  # noqa: E402
from bistable.scan import linear_scan  # noqa: E402

# The defaults (16 × 256, 2 warps, fp32; 16 × 128, 1 warp, bf16) hold 64 values of each tile a
# thread: 209-254 registers, 4-8 warps an SM (results/kernel_resources.md). Beside the H200's
# fastest (fp32 16 × 128, 1 warp; bf16 16 × 256, 1 warp), these hold 16-32 values a thread,
# 80-164 registers, 12-24 warps an SM (forward and backward); 64 × 32 with 4 warps was among the
# fastest forwards on the H200
# (results/scan_gpu_h200.md). (A looped launch, one program walking all tiles of its channels
# with the carry in registers, ran at 0.3-0.6x the chained one on an H100:
# results/scan_gpu_h100_looped.md.)
SWEEP = {torch.float32: [(16, 128, 1), (64, 32, 4), (16, 128, 2), (16, 128, 4), (32, 64, 4),
                         (32, 128, 8), (64, 64, 8), (128, 32, 8)],
         torch.bfloat16: [(16, 256, 1), (16, 128, 4), (64, 32, 4), (32, 128, 8), (64, 64, 8)]}
MRU_SWEEP = [(16, 256, 2), (8, 128, 1), (128, 16, 4)]


def bench(fn, grads=(), rep=200) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=rep, grad_to_none=list(grads), return_mode="median")


def copy_tb_s(n: int, dtype) -> float:
    """Device-to-device copy of ``n`` elements: TB/s counting bytes read + written."""
    x = torch.randn(n, device="cuda").to(dtype)
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() * x.element_size() / ms / 1e9


def _peer():
    try:
        from accelerated_scan.scalar import scan
    except ImportError:
        print("accelerated-scan not installed: peer columns left empty", flush=True)
        return None
    return scan


def _rel_err(x, y) -> float:
    return ((x.float() - y.float()).abs().max() / y.float().abs().max()).item()


def peer_row(peer, a, b, g, ours) -> dict:
    at, bt, gt = (x.transpose(1, 2).contiguous() for x in (a, b, g))
    r = {"peer_fwd_ms": bench(lambda: peer(at, bt)),
         "fwd_err_vs_peer": _rel_err(linear_scan(a, b, backend="triton"),
                                     peer(at, bt).transpose(1, 2))}
    at.requires_grad_(), bt.requires_grad_()
    r["peer_fb_ms"] = bench(lambda: peer(at, bt).backward(gt), (at, bt))
    r["fwd_speedup_vs_peer"] = r["peer_fwd_ms"] / ours["fwd_ms"]
    r["fb_speedup_vs_peer"] = r["peer_fb_ms"] / ours["fb_ms"]
    # the most any forward+backward moving its 8 elements a step at the copy's speed could gain
    at_copy_ms = ours["fb_ms"] * ours["fb_TB_s"] / ours["copy_TB_s"]
    r["fb_bound_speedup_vs_peer"] = r["peer_fb_ms"] / at_copy_ms
    return r


def scan_row(dtype, B: int, T: int, D: int, peer) -> dict:
    n = B * T * D
    a = (torch.rand(B, T, D, device="cuda") * 0.2 + 0.79).to(dtype)
    b = torch.randn(B, T, D, device="cuda").to(dtype)
    g = torch.randn(B, T, D, device="cuda").to(dtype)
    size = a.element_size()
    r = {"dtype": str(dtype).removeprefix("torch."), "T": T, "B": B, "D": D,
         "copy_TB_s": copy_tb_s(n, dtype)}
    r["fwd_ms"] = bench(lambda: linear_scan(a, b, backend="triton"))
    r["fwd_TB_s"] = 3 * n * size / r["fwd_ms"] / 1e9
    r["fwd_of_copy"] = r["fwd_TB_s"] / r["copy_TB_s"]
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    r["fb_ms"] = bench(lambda: linear_scan(ar, br, backend="triton").backward(g), (ar, br))
    r["fb_TB_s"] = 8 * n * size / r["fb_ms"] / 1e9
    if peer is not None:
        try:
            r.update(peer_row(peer, a, b, g, r))
        except Exception as exc:  # keep the run: a peer failure is a result too
            r["peer_error"] = repr(exc)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    return r


def scan_rows(args, peer) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for T in args.T:
            rows.append(scan_row(dtype, args.B, T, args.D, peer))
            torch.cuda.empty_cache()
    return rows


def sweep_rows(args):
    from triton.runtime.errors import OutOfResources

    from bistable.scan import triton_bmru as tb
    from bistable.scan import triton_scan as ts

    B, T, D = args.B, 16384, args.D
    n = B * T * D
    rows = []
    for dtype, shapes in SWEEP.items():
        a = (torch.rand(B, T, D, device="cuda") * 0.2 + 0.79).to(dtype)
        b = torch.randn(B, T, D, device="cuda").to(dtype)
        h = ts.forward(a, b, None, False)
        size = a.element_size()
        for cfg in [None, *(ts.Config(*c) for c in shapes), None]:  # default twice: the spread
            label = tuple(cfg or ts.default_config(D, dtype))
            try:
                fwd = bench(lambda: ts.forward(a, b, None, False, cfg))
                bwd = bench(lambda: ts.backward(a, h, None, b, False, config=cfg))
            except OutOfResources as exc:  # a tile too large for this GPU: say so, go on
                print(f"tiles {label} ({dtype}): {exc}", flush=True)
                continue
            rows.append({"kernel": "scan", "dtype": str(dtype).removeprefix("torch."),
                         "config": label, "default": cfg is None,
                         "fwd_ms": fwd, "fwd_TB_s": 3 * size * n / fwd / 1e9,
                         "bwd_ms": bwd, "bwd_TB_s": 5 * size * n / bwd / 1e9})
            print(rows[-1], flush=True)
        # an `a` that needs no gradient: the backward reads grad_h and a, writes db (3 elements);
        # its forward is the default tiles' just measured (rows[-1], the default's second row)
        bwd = bench(lambda: ts.backward(a, h, None, b, False, need_da=False))
        rows.append({**rows[-1], "kernel": "scan, constant a",
                     "bwd_ms": bwd, "bwd_TB_s": 3 * size * n / bwd / 1e9})
        print(rows[-1], flush=True)
    a = torch.rand(B, T, D, device="cuda") * 0.2 + 0.79
    b = torch.randn(B, T, D, device="cuda")
    s0 = torch.ones(B, D, device="cuda")
    for cfg in [None, *(ts.Config(*c) for c in MRU_SWEEP)]:
        c_, beta = a - 0.9, b
        fwd = bench(lambda: tb.fused_mru(c_, beta, s0, config=cfg))
        label = tuple(cfg) if cfg else (tuple(tb.default_config(D)),
                                        tuple(tb.default_config(D, backward=True)))
        rows.append({"kernel": "mru", "dtype": "float32", "config": label,
                     "default": cfg is None, "fwd_ms": fwd, "fwd_TB_s": 12 * n / fwd / 1e9})
        cr = c_.clone().requires_grad_()
        fb = bench(lambda: tb.fused_mru(cr, beta, s0, config=cfg).backward(b), (cr,))
        rows[-1].update(fb_ms=fb, bwd_ms=fb - fwd, bwd_TB_s=24 * n / (fb - fwd) / 1e9)
        print(rows[-1], flush=True)
    return rows


def mru_rows(args):
    from bistable.scan.triton_bmru import fused_mru

    torch.backends.cuda.matmul.allow_tf32 = True  # what cuDNN's GRU does by default
    B, T, D = args.B, 4096, args.D
    c = torch.randn(B, T, D, device="cuda", requires_grad=True)
    beta = torch.randn(B, T, D, device="cuda", requires_grad=True)
    s0 = torch.ones(B, D, device="cuda")
    eps = torch.full((D,), 0.5, device="cuda", requires_grad=True)
    g = torch.randn(B, T, D, device="cuda")
    a = (torch.rand(B, T, D, device="cuda") * 0.2 + 0.79).requires_grad_()
    b = torch.randn(B, T, D, device="cuda", requires_grad=True)
    x = torch.randn(B, T, D, device="cuda", requires_grad=True)
    proj = torch.nn.Linear(D, 2 * D, device="cuda")
    alpha = torch.ones(D, device="cuda", requires_grad=True)
    gru = torch.nn.GRU(D, D, batch_first=True, device="cuda")

    def layer():
        cc, bb = proj(x).chunk(2, dim=-1)
        return alpha * fused_mru(cc, bb, s0)

    t = {
        "scan_fb_ms": bench(lambda: linear_scan(a, b, backend="triton").backward(g), (a, b)),
        "bmru_fb_ms": bench(lambda: fused_mru(c, beta, s0).backward(g), (c, beta)),
        "cmru_fb_ms": bench(lambda: fused_mru(c, beta, s0, eps).backward(g), (c, beta, eps)),
        "bmru_layer_fb_ms": bench(lambda: layer().backward(g), (x, alpha, *proj.parameters())),
        "gru_fb_ms": bench(lambda: gru(x)[0].backward(g), (x, *gru.parameters()), rep=1500),
    }
    t["bmru_over_scan"] = t["bmru_fb_ms"] / t["scan_fb_ms"]
    t["cmru_over_scan"] = t["cmru_fb_ms"] / t["scan_fb_ms"]
    t["gru_over_bmru"] = t["gru_fb_ms"] / t["bmru_fb_ms"]
    t["gru_over_bmru_layer"] = t["gru_fb_ms"] / t["bmru_layer_fb_ms"]
    print(t, flush=True)
    return {"B": B, "T": T, "D": D, "dtype": "float32", **t}


def gpu_slug() -> str:
    name = torch.cuda.get_device_name().lower()
    found = re.search(r"[a-z]+\d+[a-z]*", name.replace("nvidia", ""))
    return found.group(0) if found else re.sub(r"\W+", "_", name)


def markdown(data: dict, versions: str) -> str:
    scan, mru, sweep = data["scan"], data.get("mru"), data.get("sweep")
    md = header(f"linear_scan and the fused MRU on {torch.cuda.get_device_name()}")
    md += (f"- versions: {versions}\n\nMedians of `triton.testing.do_bench` (ms). Bandwidth counts "
           "bytes read + written: forward 3 elements a step (a, b → h), forward+backward 8. "
           "*copy*: device-to-device copy of a tensor of the same size. *peer*: accelerated-scan "
           "0.3.1 `scalar.scan` in its own (B, D, T) layout. *bound*: the peer's fwd+bwd time "
           "over that of a kernel moving the 8 elements a step at the copy's speed, the most any "
           "scan can gain on it.\n\n"
           "| dtype | T | copy TB/s | fwd ms | fwd TB/s | fwd / copy | peer fwd ms | "
           "fwd+bwd ms | fwd+bwd TB/s | peer fwd+bwd ms | fwd+bwd speed-up vs peer | "
           "bound on that speed-up |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in scan:
        nan = float("nan")
        md += (f"| {r['dtype']} | {r['T']} | {r['copy_TB_s']:.2f} | {r['fwd_ms']:.3f} | "
               f"{r['fwd_TB_s']:.2f} | {r['fwd_of_copy']:.0%} | {r.get('peer_fwd_ms', nan):.3f} | "
               f"{r['fb_ms']:.3f} | {r['fb_TB_s']:.2f} | {r.get('peer_fb_ms', nan):.3f} | "
               f"{r.get('fb_speedup_vs_peer', nan):.2f}× | "
               f"{r.get('fb_bound_speedup_vs_peer', nan):.2f}× |\n")
    if sweep:
        md += ("\nTile shapes (block_t, block_d, num_warps) at T = 16384; *default* is what "
               "the library launches (the MRU's: forward, backward), measured twice, first and "
               "last, for the spread. MRU backward = fwd+bwd − fwd. *scan, constant a*: the "
               "backward without `da` (`need_da=False`: 3 elements a step, not 5).\n\n"
               "| kernel | dtype | tiles | default | fwd ms | fwd TB/s | bwd ms | bwd TB/s |\n"
               "|---|---|---|---|---|---|---|---|\n")
        for r in sweep:
            md += (f"| {r['kernel']} | {r.get('dtype', 'float32')} | {r['config']} | "
                   f"{'yes' if r['default'] else ''} | "
                   f"{r['fwd_ms']:.3f} | {r['fwd_TB_s']:.2f} | {r['bwd_ms']:.3f} | "
                   f"{r['bwd_TB_s']:.2f} |\n")
    if mru is None:
        return md
    md += (f"\nMRU family at B={mru['B']}, T={mru['T']}, D={mru['D']}, fp32, forward+backward "
           "(ms). *BMRU op*: `fused_mru(c, β, s0)`; *CMRU op*: the same with ε (H,) learned; "
           "*BMRU layer*: `Linear(D, 2D)` → c, β → `fused_mru` → α ⊙ s; *GRU*: cuDNN "
           "`nn.GRU(D, D)`."
           "\n\n| bare scan | BMRU op | CMRU op | BMRU layer | GRU | BMRU op / scan | "
           "GRU / BMRU op | GRU / BMRU layer |\n|---|---|---|---|---|---|---|---|\n"
           f"| {mru['scan_fb_ms']:.3f} | {mru['bmru_fb_ms']:.3f} | {mru['cmru_fb_ms']:.3f} | "
           f"{mru['bmru_layer_fb_ms']:.3f} | {mru['gru_fb_ms']:.1f} | "
           f"{mru['bmru_over_scan']:.2f}× | "
           f"{mru['gru_over_bmru']:.1f}× | {mru['gru_over_bmru_layer']:.1f}× |\n")
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=summary(__doc__))
    p.add_argument("--T", type=positive_int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--B", type=positive_int, default=8)
    p.add_argument("--D", type=positive_int, default=1024)
    p.add_argument("--sweep", action="store_true", help="also time other tile shapes")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/scan_cuda.py needs a CUDA device")
    import triton

    peer = _peer()
    versions = f"torch {torch.__version__}, triton {triton.__version__}"
    if peer is not None:
        from importlib.metadata import version

        versions += f", accelerated-scan {version('accelerated-scan')}"
    print(versions, torch.cuda.get_device_name(), flush=True)
    peak = copy_tb_s(1 << 28, torch.float32)  # 1 GiB
    print(f"copy of 1 GiB: {peak:.2f} TB/s", flush=True)
    versions += f"; copy of 1 GiB fp32: {peak:.2f} TB/s"
    data = {"versions": versions, "gpu": torch.cuda.get_device_name(), "copy_1GiB_TB_s": peak}
    # the most wanted first; the results are rewritten after each part, should a run be cut short,
    # and say so until the last part is in (a cut-short file must not pass for a whole one)
    parts = (("scan", lambda: scan_rows(args, peer)), ("mru", lambda: mru_rows(args)),
             ("sweep", lambda: sweep_rows(args) if args.sweep else []))
    for k, (part, fn) in enumerate(parts):
        data[part] = fn()
        data["partial"] = k < len(parts) - 1
        md = markdown(data, versions)
        if data["partial"]:
            md += (f"\n**Partial**: written after the {part} part, with "
                   f"{', '.join(p for p, _ in parts[k + 1:])} still to run (a run cut short by "
                   "its time limit leaves this file so).\n")
        print(write_results(f"scan_gpu_{gpu_slug()}", md, data), flush=True)
    print(md)

if __name__ == "__main__":
    run_main(main)
