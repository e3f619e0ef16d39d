"""What the reference numerics buy: the same smoke trainings with the machine's capability switched underneath.

Each run is a fresh process (the numerics are read when torch loads) that trains and tests one
smoke-profile job through the results pipeline (``adlib.results.run_job``) and reports its metrics,
a digest of its image scores and its training time. The machine is emulated by environment
variables a real machine would differ in:

- ``avx512``: nothing set (this machine's own dispatch; AVX-512 where the CPU has it);
- ``avx2``: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2`` (an AVX2-only CPU);
- ``default``: ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=SSE4_2 OPENBLAS_CORETYPE=Nehalem``
  (no AVX at all);

each under ``ADLIB_NUMERICS=native`` (the machine's numerics with all cores' threads, as a single
CLI run has them), ``native-1t`` (the same with one thread, as each of 2 results-store workers on
2 cores has it: the fair speed peer of the reference inside ``make reproduce``) and ``reference``
(the default: adlib pins its own). Under the reference, every emulated machine should give the same
digest. ``reference-onednn`` is the reference with oneDNN and NNPACK switched back on (the reference
before 2026-12-06): the speed peer that says what switching them off costs. The emulation cannot
change the cache sizes oneDNN blocks by, which is why it did not show that gap (``adlib.numerics``).

    .venv/bin/python benchmarks/numerics_emulation.py [--methods glass-m vanilla ...] [--category wood] [--seed 0]
        [--modes reference reference-onednn] [--machines avx512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from adlib.numerics import ENV_SAVED, REFERENCE_ENV

MACHINES = {
    "avx512": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "SSE4_2",
        "OPENBLAS_CORETYPE": "Nehalem",
    },
}
METHODS = {
    "glass-m": ("glass", {"variant": "m"}),
    "simplenet": ("simplenet", {}),
    "patchcore": ("patchcore", {}),
    "pouta": ("pouta", {}),
    "vanilla": ("vanilla", {}),
    "adl": ("adl", {}),
    "adtr": ("adtr", {}),
}

CHILD = r"""
import hashlib, json, sys, tempfile, time
import numpy as np
from adlib import numerics
from adlib.results import Job, run_job
method, opts, category, seed, onednn = json.loads(sys.argv[1])
if onednn:  # the former reference: oneDNN and NNPACK on
    numerics.REFERENCE_BACKENDS.update(mkldnn=True, nnpack=True)
job = Job.make(method, "synth", category, "smoke", seed, **opts)
with tempfile.TemporaryDirectory() as d:
    rec = run_job(job, d, progress=False)
    scores = np.load(d + "/prediction.npz")["image_scores"]
num = rec["environment"]["numerics"]
print(json.dumps({"metrics": rec["metrics"], "digest": hashlib.sha256(scores.tobytes()).hexdigest()[:12],
                  "train_s": rec["train_seconds"], "cap": num["aten_capability"], "threads": num["torch_threads"]}))
"""


def run(method: str, machine: str, mode: str, category: str, seed: int) -> dict:
    name, opts = METHODS[method]
    # the emulated machine's environment alone: nothing inherited from this (reference) process
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (*REFERENCE_ENV, ENV_SAVED, "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    env.update(MACHINES[machine], ADLIB_NUMERICS="native" if mode.startswith("native") else "reference")
    if mode == "native-1t":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([name, opts, category, seed, mode == "reference-onednn"])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["glass-m", "vanilla", "pouta", "adl"], choices=list(METHODS))
    ap.add_argument("--category", default="wood")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["native", "native-1t", "reference"],
        choices=["native", "native-1t", "reference", "reference-onednn"],
    )
    ap.add_argument("--machines", nargs="+", default=list(MACHINES), choices=list(MACHINES))
    args = ap.parse_args()
    from adlib.results import _processor

    print(
        f"machine: {_processor()} ({platform.machine()}), {os.cpu_count()} cores; "
        f"synth/{args.category}, seed {args.seed}; {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| method | numerics | emulated machine | ATen kernels | threads | image AUROC | AU-PRO | score digest | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for method in args.methods:
        for mode in args.modes:
            for machine in args.machines:
                r = run(method, machine, mode, args.category, args.seed)
                m = r["metrics"]
                print(
                    f"| {method} | {mode} | {machine} | {r['cap']} | {r['threads']} | {m['image_auroc']:.4f} | "
                    f"{m.get('au_pro', float('nan')):.5f} | {r['digest']} | {r['train_s']:.1f} |",
                    flush=True,
                )
                summary.setdefault((method, mode), []).append(r)
    print()
    print(
        "| method | numerics | distinct score digests over the emulated machines | image AUROC range | mean train s |"
    )
    print("|---|---|---|---|---|")
    for (method, mode), rs in summary.items():
        auc = [r["metrics"]["image_auroc"] for r in rs]
        print(
            f"| {method} | {mode} | {len({r['digest'] for r in rs})} | {min(auc):.4f}-{max(auc):.4f} | "
            f"{sum(r['train_s'] for r in rs) / len(rs):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
