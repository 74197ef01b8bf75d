"""Data pipeline speed and the simulator's calibration.

    python benchmarks/data.py [--n-files 10000] [--n-time-bins 10] [--repeats 3] [--real DIR]

1. Simulates ``--n-files`` MNIST test digits as N-MNIST recordings (``nmnist_sim``, seed 0) into
   a temporary folder: simulator speed and the statistics compared with real N-MNIST.
2. Reads and bins all those files (``n_time_bins``), median of ``--repeats`` passes, files/s:
   read only, read + bin, read + denoise + bin, and the dataset's cache (build, then reads).
3. Loads MNIST and Fashion-MNIST (train + test) from the shared copy with md5 verification.
4. With ``--real DIR`` (a real N-MNIST download, e.g. by ``bistable data fetch nmnist``): the
   same statistics over its first ``--n-files`` test recordings, beside the simulated ones.
Writes results/data.md and results/data.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    header,
    median_time,
    positive_int,
    run_main,
    summary,
    write_results,
)
from bistable.data import idx, nmnist, nmnist_sim  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def simulate(root: Path, n: int) -> dict:
    images, labels = idx.load("mnist", "test", SHARED)
    t0 = time.perf_counter()
    recs = []
    for lo in range(0, n, 256):
        hi = min(lo + 256, n)
        recs += nmnist_sim.simulate(images[lo:hi], [[0, 1, i] for i in range(lo, hi)])
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, ev in enumerate(recs):
        folder = root / "Test" / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        nmnist.write_events(folder / f"{i:05d}.bin", ev)
    write_s = time.perf_counter() - t0
    return {**nmnist_sim.statistics(recs), "simulate_samples_per_s": n / sim_s,
            "write_files_per_s": n / write_s}


def reading(root: Path, bins: int, repeats: int) -> dict:
    files, _ = nmnist.list_samples(root, "test")
    n = len(files)
    cases = {
        "read_events": lambda: [nmnist.read_events(f) for f in files],
        f"read + to_frames(n_time_bins={bins})":
            lambda: [nmnist.load_frames(f, n_time_bins=bins) for f in files],
        f"read + denoise(10 ms) + to_frames(n_time_bins={bins})":
            lambda: [nmnist.load_frames(f, n_time_bins=bins, filter_time=10_000) for f in files],
    }
    out = {name: n / median_time(fn, repeats=repeats, warmup=1) for name, fn in cases.items()}
    cache = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    ds = nmnist.NMNIST(root, "test", n_time_bins=bins, cache_dir=cache, progress=False)
    out[f"dataset cache build (n_time_bins={bins})"] = n / (time.perf_counter() - t0)
    out["dataset open cache (CRC check)"] = n / median_time(
        lambda: nmnist.NMNIST(root, "test", n_time_bins=bins, cache_dir=cache), repeats=repeats)
    out["dataset items from cache"] = n / median_time(lambda: [ds[i] for i in range(n)],
                                                      repeats=repeats)
    return out


def real_statistics(root: Path, n: int) -> dict:
    files, _ = nmnist.list_samples(root, "test")
    step = max(1, len(files) // n)  # spread over all digits (files are sorted by digit)
    return nmnist_sim.statistics([nmnist.read_events(f) for f in files[::step][:n]])


def mnist_loading(repeats: int) -> dict:
    return {name: median_time(lambda name=name: [idx.load(name, s, SHARED, verify=True)
                                                 for s in ("train", "test")], repeats=repeats)
            for name in ("mnist", "fashion-mnist")}


def real_cell(real: dict | None, fmt: str, published: str = "not measured here") -> str:
    """A statistic of the real recordings (``--real``), or what is known without them
    (docs/data.md)."""
    return fmt.format(**real) + f" ({real['samples']} files)" if real else published


def main() -> None:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--n-files", type=positive_int, default=10_000)
    parser.add_argument("--n-time-bins", type=positive_int, default=10)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--real", type=Path, help="root of a real N-MNIST copy (Train/, Test/)")
    args = parser.parse_args()
    real = real_statistics(args.real, args.n_files) if args.real else None
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate(Path(tmp), args.n_files)
        speed = reading(Path(tmp), args.n_time_bins, args.repeats)
    load = mnist_loading(args.repeats)
    busy = os.getloadavg()[1]

    md = header("Data pipeline: N-MNIST reading and binning, simulator, MNIST loading")
    md += (f"- load average over the run (5 min): {busy:.1f} on {os.cpu_count()} cores; wall-clock "
           "figures on a shared machine are lower bounds\n\n")
    md += (f"## Reading and binning {args.n_files} N-MNIST-format files (simulated recordings, "
           f"{sim['events_mean']:.0f} events each on average)\n\n"
           "Target: read + bin >= 2000 files/s.\n\n| pipeline | files/s |\n|---|---:|\n")
    md += "".join(f"| {k} | {v:,.0f} |\n" for k, v in speed.items())
    md += ("\n## MNIST-style loading from the shared copy, md5 verified (train + test)\n\n"
           "Target: <= 2 s.\n\n| dataset | seconds |\n|---|---:|\n")
    md += "".join(f"| {k} | {v:.2f} |\n" for k, v in load.items())
    md += (f"\n## Simulated N-MNIST (MNIST test digits 0..{args.n_files - 1}, seed 0, default "
           "SimConfig)\n\n| statistic | simulated | real N-MNIST |\n|---|---:|---|\n"
           f"| events per sample, mean ± sd | {sim['events_mean']:.0f} ± {sim['events_std']:.0f}"
           f" | {real_cell(real, '{events_mean:.0f} ± {events_std:.0f}')} |\n"
           f"| ON fraction | {sim['on_fraction']:.3f} | {real_cell(real, '{on_fraction:.3f}')} |\n"
           f"| duration (ms), mean [min, max] | {sim['duration_ms_mean']:.1f} "
           f"[{sim['duration_ms_min']:.1f}, {sim['duration_ms_max']:.1f}] | "
           + real_cell(real, "{duration_ms_mean:.1f} [{duration_ms_min:.1f}, "
                             "{duration_ms_max:.1f}]", "about 300 (3 saccades of 100 ms)")
           + " |\n"
           f"| simulator speed (samples/s) | {sim['simulate_samples_per_s']:.0f} | |\n"
           f"| writing .bin files (files/s) | {sim['write_files_per_s']:.0f} | |\n")
    write_results("data", md, {"n_files": args.n_files, "n_time_bins": args.n_time_bins,
                               "files_per_s": speed, "mnist_load_s": load, "simulated": sim,
                               "real": real, "load_average_5min": busy})
    print(md)


if __name__ == "__main__":
    run_main(main)
