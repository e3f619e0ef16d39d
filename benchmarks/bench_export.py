"""ONNX export time and CPU inference speed: onnxruntime against PyTorch, in the same process.

For each model: :func:`adlib.export.export_onnx` (the file write alone, and with the parity check
on 3 random images that it runs), then images per second of

- ``pytorch predict``: the method's own ``predict`` on prepared images (what ``adlib predict``
  runs: the network, then the maps' up-sampling and SciPy Gaussian on NumPy);
- ``pytorch module``: the exported module itself (:class:`adlib.export.ExportedModel`) in PyTorch;
- ``onnxruntime``: the exported graph (CPU execution provider),

each at batch ``--batch-size`` on the same random uint8 images, ``--reps`` timed batches after one
discarded, the median; torch and onnxruntime with the same number of intra-op threads. Weights do
not change the speed, so the paper architectures use random-init backbones (PatchCore: a random
memory bank of ``--paper-bank`` rows, about a 10 % coreset of 130 training images at 28 x 28).

Models: ``glass-smoke`` (the smoke profile: ResNet-18 random-init, 128 px, 256-D; untrained
adaptor and discriminator), ``patchcore-smoke`` (smoke profile, its bank fitted on 16 built-in
benchmark images at 128 px), ``glass-paper`` (WideResNet-50 layer2+3, 288 px, 1536-D),
``patchcore-paper`` (WideResNet-50, 224 px, 1024-D, reweighted score).

    .venv/bin/python benchmarks/bench_export.py --threads 2
    .venv/bin/python benchmarks/bench_export.py --models glass-smoke patchcore-smoke --threads 1

The numerics in force (``adlib.numerics.describe()``: reference = AVX2 kernels, unless
``ADLIB_NUMERICS=native``) are printed with the results; results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import adlib
from adlib import numerics
from adlib.data.base import ImageTransform
from adlib.export import ExportedModel, export_onnx, onnx_session
from adlib.models import build
from adlib.models.core import _ImageList, input_hw

MODELS = ("glass-smoke", "patchcore-smoke", "glass-paper", "patchcore-paper")


def _model(name: str, tmp: Path, paper_bank: int):
    if name == "glass-smoke":
        return build("glass", "smoke", variant="m")
    if name == "glass-paper":
        return build("glass", "paper", variant="m", pretrained=False)
    if name == "patchcore-smoke":
        from adlib.data import get_dataset
        from adlib.data.synth import generate_benchmark

        generate_benchmark(tmp / "bench", seed=0, categories=["wood"], n_train=16, n_test_good=1, n_per_defect=1,
                           size=128, progress=False, workers=1)  # fmt: skip
        model = build("patchcore", "smoke")
        model.fit(get_dataset("synth", "wood", "train", root=tmp / "bench", transform=model.transform), progress=False)
        return model
    if name == "patchcore-paper":
        model = build("patchcore", "paper", pretrained=False)
        g = torch.Generator().manual_seed(0)
        model.memory_bank = torch.randn(paper_bank, model.features.dim, generator=g).abs()
        return model
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def _median_seconds(fn, reps: int) -> float:
    fn()  # discarded: first-call allocations, lazy initialisation
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, batch: int, reps: int, threads: int, paper_bank: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = _model(name, tmp, paper_bank)
        model.to("cpu")
        model.eval()
        t0 = time.perf_counter()
        res = export_onnx(model, tmp / "export")
        total = time.perf_counter() - t0
        meta = res.metadata
        hw = input_hw(model.transform)
        images = np.random.default_rng(0).integers(0, 256, size=(batch, *hw, 3), dtype=np.uint8)
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        t0 = time.perf_counter()
        sess = onnx_session(res.path, threads=threads)
        session_s = time.perf_counter() - t0
        ort_s = _median_seconds(lambda: sess.run(None, {"image": x}), reps)
        prepared = _ImageList(list(images), ImageTransform(resize=None, normalize=bool(model.transform.normalize)))
        torch_predict_s = _median_seconds(lambda: model.predict(prepared, batch_size=batch, progress=False), reps)
        mean_std = (meta["preprocessing"]["mean"], meta["preprocessing"]["std"])
        wrapper = ExportedModel(model.export_module(), *mean_std).eval()
        xt = torch.from_numpy(x)

        def module():
            with torch.no_grad():
                wrapper(xt)

        torch_module_s = _median_seconds(module, reps)
        return {
            "model": name,
            "input": f"{hw[0]}x{hw[1]}",
            "onnx_mb": round(res.path.stat().st_size / 2**20, 1),
            "export_s": meta["export_seconds"],
            "export_with_parity_s": round(total, 2),
            "session_s": round(session_s, 2),
            "ort_img_s": round(batch / ort_s, 2),
            "torch_predict_img_s": round(batch / torch_predict_s, 2),
            "torch_module_img_s": round(batch / torch_module_s, 2),
            "ort_vs_predict": round(torch_predict_s / ort_s, 2),
            "parity_score": meta["parity"]["score_max_abs_diff"],
            "parity_map": meta["parity"]["map_max_abs_diff"],
        }


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--paper-batch-size", type=int, default=2, help="batch of the paper architectures")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--paper-bank", type=int, default=10240, help="PatchCore paper: random bank rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"# {_cpu()}; {args.threads} thread(s); torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"adlib {adlib.__version__}; numerics {json.dumps(numerics.describe(), default=str)}"
    )
    cols = None
    for name in args.models:
        batch = args.paper_batch_size if name.endswith("paper") else args.batch_size
        row = bench(name, batch, args.reps, args.threads, args.paper_bank)
        row["batch"] = batch
        if cols is None:
            cols = list(row)
            print("| " + " | ".join(cols) + " |")
            print("|" + "---|" * len(cols))
        print("| " + " | ".join(str(row[c]) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
