"""The fast paths of adlib.fastpath on GLASS's paper architecture: fp32 vs patch features vs bf16 + channels-last (+ features, + compile).

GLASS-m of the paper profile (WideResNet-50 layer2 + layer3, 288 x 288, 1536-D features, adaptor and
discriminator) with random weights (speed does not depend on them), batch 8, ``--threads`` torch
threads (default 2), the same random batch for every path. Each numerics mode runs in a fresh
process (``ADLIB_NUMERICS`` must be set before Python starts: oneDNN reads its ISA cap once):
``native`` (the machine's own kernels: AMX where present) and ``reference`` (oneDNN capped at AVX2,
adlib's pinned numerics). Within a process the paths are timed interleaved (fp32, bf16, ...,
fp32, bf16, ... one batch each per round) after a warm-up batch each; medians; images per second
and the ratio to fp32 of the same process. Also one GLASS training epoch (paper profile, 16 images
of a built-in category generated at 288 px, test-set selection off), fp32 vs the fastest path
(bf16 + channels-last + grid-order patch features), interleaved over ``--epoch-rounds``.

    .venv/bin/python benchmarks/bench_fastpath.py --quick      # <= 3 min: 2 rounds, no compile, 8-image epoch, native
    .venv/bin/python benchmarks/bench_fastpath.py              # full: 5 rounds, + compile, 16-image epoch, both numerics

Prints a table and one JSON line per process (``--json PATH`` writes them); results are recorded in
benchmarks/RESULTS.md with the machine and settings.
"""

# ruff: noqa: I001  (adlib first: its numerics must be in the environment before torch loads)
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS_QUICK = ("fp32", "features", "bf16,channels_last", "bf16,channels_last,features")
#: the path of the timed training epoch beside fp32
FAST_EPOCH = "bf16,channels_last,features"
PATHS_FULL = (*PATHS_QUICK, "bf16,channels_last,features,compile")


def _child(args: argparse.Namespace) -> dict:
    """One numerics mode: inference paths interleaved, then the training epochs."""
    import adlib  # noqa: F401  (numerics before torch)
    import torch

    from adlib import fastpath
    from adlib.models import build

    torch.set_num_threads(args.threads)
    paths = args.paths.split(";")
    models = {}
    for p in paths:
        m = build("glass", "paper", variant="m", pretrained=False, fast=() if p == "fp32" else p)
        m.to("cpu")
        m.eval()
        models[p] = m
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 288, 288, generator=g)
    times: dict[str, list[float]] = {p: [] for p in paths}
    warm: dict[str, float] = {}
    with torch.no_grad():
        for p in paths:  # warm-up (compilation for compile)
            t = time.perf_counter()
            models[p].score_grid(x)
            warm[p] = time.perf_counter() - t
        for _ in range(args.rounds):
            for p in paths:
                t = time.perf_counter()
                models[p].score_grid(x)
                times[p].append(time.perf_counter() - t)
    infer = {
        p: {
            "img_s": args.batch_size / statistics.median(ts),
            "median_s": statistics.median(ts),
            "warmup_s": warm[p],
            "times": ts,
        }
        for p, ts in times.items()
    }
    out = {
        "numerics": os.environ.get("ADLIB_NUMERICS", "reference"),
        "threads": torch.get_num_threads(),
        "batch": args.batch_size,
        "rounds": args.rounds,
        "cpu": fastpath.cpu_facts(),
        "speed_record": models[paths[-1]].fast_info(),
        "infer": infer,
    }
    del models
    if args.epoch_images:
        out["epoch"] = _epochs(args)
    return out


def _epochs(args: argparse.Namespace) -> dict:
    import torch

    from adlib.data import get_dataset
    from adlib.data.synth import generate_benchmark
    from adlib.models import build

    root = Path(tempfile.mkdtemp(prefix="bench-fastpath-"))
    generate_benchmark(
        root,
        seed=0,
        categories=["wood"],
        n_train=args.epoch_images,
        n_test_good=1,
        n_per_defect=1,
        size=288,
        progress=False,
        workers=1,
    )
    times: dict[str, list[float]] = {"fp32": [], FAST_EPOCH: []}
    for _ in range(args.epoch_rounds):
        for p in times:
            m = build(
                "glass",
                "paper",
                variant="m",
                pretrained=False,
                epochs=1,
                select_best_on_test=False,
                data_root=str(root),
                fast=() if p == "fp32" else p,
            )
            ds = get_dataset("synth", "wood", "train", root=root, transform=m.transform)
            torch.set_num_threads(args.threads)
            t = time.perf_counter()
            m.fit(ds, device="cpu", progress=False)
            times[p].append(time.perf_counter() - t)
    return {p: {"median_s": statistics.median(ts), "times": ts, "images": args.epoch_images} for p, ts in times.items()}


def _run_mode(mode: str, args: argparse.Namespace, paths: tuple[str, ...]) -> dict:
    env = {**os.environ, "ADLIB_NUMERICS": mode}
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--paths",
        ";".join(paths),
        "--rounds",
        str(args.rounds),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--epoch-images",
        str(args.epoch_images if mode in args.epoch_modes.split(",") else 0),
        "--epoch-rounds",
        str(args.epoch_rounds),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="<= 3 min: 2 rounds, no compile, 8-image epoch (native)")
    ap.add_argument("--numerics", default=None, help="native,reference (default: both; --quick: native)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; --quick 2)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epoch-images", type=int, default=None, help="training images of the epoch (default 16; quick 8)")
    ap.add_argument("--epoch-rounds", type=int, default=None, help="epochs per path (default 2; quick 1)")
    ap.add_argument("--epoch-modes", default="native", help="numerics modes that time the epoch (default native)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.epoch_images = args.epoch_images if args.epoch_images is not None else (8 if args.quick else 16)
    args.epoch_rounds = args.epoch_rounds or (1 if args.quick else 2)
    paths = PATHS_QUICK if args.quick else PATHS_FULL
    modes = (args.numerics or ("native" if args.quick else "native,reference")).split(",")
    import platform

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    t0 = time.perf_counter()
    results = {m: _run_mode(m, args, paths) for m in modes}
    print(
        f"GLASS-m paper architecture (WRN-50 layer2+3, 288 px, random weights), batch {args.batch_size}, "
        f"{args.threads} threads, {args.rounds} interleaved rounds, medians; CPU {cpu}"
    )
    for mode, r in results.items():
        c = r["cpu"]
        print(
            f"\nnumerics {mode}: ATen {c['aten_capability']}, oneDNN cap {c['onednn_max_cpu_isa']}, "
            f"AMX {c['amx_tile']} (usable {c['amx_allowed']}), AVX512-bf16 {c['avx512_bf16']}, "
            f"bf16 units: {r['speed_record'].get('bf16_units')}"
        )
        base = r["infer"]["fp32"]["img_s"]
        for p, v in r["infer"].items():
            print(
                f"  {p:28s} {v['img_s']:6.2f} img/s  x{v['img_s'] / base:5.2f} vs fp32   (warm-up {v['warmup_s']:.1f} s)"
            )
        if "epoch" in r:
            e = r["epoch"]
            f, q = e["fp32"]["median_s"], e[FAST_EPOCH]["median_s"]
            print(
                f"  training epoch ({e['fp32']['images']} images): fp32 {f:.1f} s, {FAST_EPOCH} {q:.1f} s, x{f / q:.2f}"
            )
    if len(results) == 2 and "native" in results and "reference" in results:
        n, rf = results["native"]["infer"], results["reference"]["infer"]
        print(
            f"\nnative fastest vs reference fp32 (separate processes): "
            f"x{max(v['img_s'] for v in n.values()) / rf['fp32']['img_s']:.2f}"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "results": results}, indent=1))


if __name__ == "__main__":
    main()
