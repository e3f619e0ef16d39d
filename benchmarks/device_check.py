"""The GPU checks of issue 22 (item 4), one step per call; ``benchmarks/device_check.sh`` runs them all.

Nothing is downloaded: backbones are randomly initialised (speed does not depend on the weights),
the built-in benchmark is generated locally. Each step writes ``<out>/<step>.json``.

    python benchmarks/device_check.py throughput --method glass --device cuda --out runs/device_check
    python benchmarks/device_check.py throughput --method patchcore --device cuda --out runs/device_check
    python benchmarks/device_check.py epoch --device cuda --out runs/device_check
    python benchmarks/device_check.py throughput --method glass --device cpu --tiny --out /tmp/dc   # CPU dry run

``throughput``: the paper architecture (GLASS-m: WRN-50 layer2+3 at 288 px, adaptor and
discriminator; PatchCore: WRN-50 layer2+3 at 224 px against a random memory bank of
:data:`adlib.papers.pouta.PAPER_BANK_SIZE` rows), the inference forward (GLASS: ``score_grid``;
PatchCore: ``score``, features + nearest neighbours + reweighting) for each fast path of
:mod:`adlib.fastpath` (fp32, grid-order patch features, bf16 + channels-last + features, GLASS + ``bf16_heads``,
+ compile, + CUDA graphs: :data:`PATHS`) at batch 8 and
at larger batches (the best batch is reported), interleaved over rounds, medians, images per second.
``epoch``: one GLASS epoch of the paper profile (test-set selection off) on a built-in category
generated at 288 px, fp32, bf16 + channels-last + features, and + ``bf16_ascent`` with the normal
features cached (:data:`EPOCH_PATHS`). ``--tiny``: small sizes for a CPU dry run
(ResNet-18, 64 px, batch 2, one round).
"""

# ruff: noqa: I001  (adlib first: its numerics must be in the environment before torch loads)
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import adlib  # noqa: F401  (numerics before torch)
import torch

#: the fast paths timed per method (GLASS also with its heads in bf16, ``bf16_heads``)
PATHS = {
    "glass": (
        "fp32",
        "features",
        "bf16,channels_last,features",
        "bf16,channels_last,features,bf16_heads",
        "bf16,channels_last,features,bf16_heads,compile",
        "bf16,channels_last,features,bf16_heads,cuda_graphs",
    ),
    "patchcore": (
        "fp32",
        "features",
        "bf16,channels_last,features",
        "bf16,channels_last,features,compile",
        "bf16,channels_last,features,cuda_graphs",
    ),
}
#: the training paths of the epoch step (``bf16_ascent`` with the normal features cached)
EPOCH_PATHS = ("fp32", "bf16,channels_last,features", "bf16,channels_last,features,bf16_ascent")
TINY = dict(backbone="resnet18", resize=64, crop=64, pretrain_embed_dim=64, target_embed_dim=64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _environment(device: torch.device) -> dict:
    from adlib import fastpath, numerics

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numerics": numerics.describe(device),
        "cpu": fastpath.cpu_facts(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _model(method: str, fast: str, tiny: bool, device: torch.device):
    from adlib.models import build

    fast_value = () if fast == "fp32" else fast
    if method == "glass":
        kw = dict(TINY, dsc_hidden=64) if tiny else {}
        m = build("glass", "paper", variant="m", pretrained=False, fast=fast_value, **kw)
        m.to(device)
        m.eval()
        return m, (lambda x: m.score_grid(x)), m.transform.output_size((288, 288))
    from adlib.papers.pouta import PAPER_BANK_SIZE

    kw = dict(backbone="resnet18", resize=64, crop=64) if tiny else {}
    m = build("patchcore", "paper", pretrained=False, fast=fast_value, **kw)
    m.to(device)
    size = int(m.cfg.crop or m.cfg.resize)
    rows = 512 if tiny else PAPER_BANK_SIZE
    g = torch.Generator().manual_seed(0)
    m.memory_bank = torch.randn(rows, m.features.dim, generator=g).to(device)
    return m, (lambda x: m.score(x)), (size, size)


def throughput(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    paths = [p for p in PATHS[args.method] if device.type == "cuda" or "cuda_graphs" not in p]
    if args.no_compile:
        paths = [p for p in paths if "compile" not in p and "cuda_graphs" not in p]
    batches = [2] if args.tiny else [int(b) for b in args.batches.split(",")]
    rounds = 1 if args.tiny else args.rounds
    out = {"step": f"throughput-{args.method}", "env": _environment(device), "results": {}}
    deadline = time.perf_counter() + args.budget
    for p in paths:
        model, fn, size = _model(args.method, p, args.tiny, device)
        res = {}
        for b in batches:
            if time.perf_counter() > deadline:
                res[str(b)] = "skipped (time budget)"
                continue
            x = torch.randn(b, 3, *size, device=device)
            try:
                with torch.no_grad():
                    t = time.perf_counter()
                    fn(x)  # warm-up (compilation, CUDA graph capture)
                    _sync(device)
                    warm = time.perf_counter() - t
                    fn(x)
                    ts = []
                    for _ in range(rounds):
                        _sync(device)
                        t = time.perf_counter()
                        fn(x)
                        _sync(device)
                        ts.append(time.perf_counter() - t)
                res[str(b)] = {"img_s": b / statistics.median(ts), "warmup_s": warm, "times": ts}
            except torch.OutOfMemoryError:
                res[str(b)] = "out of memory"
                torch.cuda.empty_cache()
        res["record"] = model.fast_info()
        out["results"][p] = res
        print(
            p,
            {
                k: (round(v["img_s"], 1) if isinstance(v, dict) and "img_s" in v else v)
                for k, v in res.items()
                if k != "record"
            },
            flush=True,
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    best = {
        p: max(
            ((int(b), v["img_s"]) for b, v in r.items() if isinstance(v, dict) and "img_s" in v),
            key=lambda t: t[1],
            default=None,
        )
        for p, r in out["results"].items()
    }
    out["best_batch"] = best
    return out


def epoch(args: argparse.Namespace) -> dict:
    from adlib.data import get_dataset
    from adlib.data.synth import generate_benchmark
    from adlib.models import build

    device = torch.device(args.device)
    size = 64 if args.tiny else 288
    n = 4 if args.tiny else args.images
    root = Path(tempfile.mkdtemp(prefix="device-check-"))
    generate_benchmark(
        root,
        seed=0,
        categories=["wood"],
        n_train=n,
        n_test_good=1,
        n_per_defect=1,
        size=size,
        progress=False,
        workers=1,
    )
    out = {"step": "epoch-glass", "env": _environment(device), "images": n, "size": size, "results": {}}
    for p in EPOCH_PATHS:
        kw = dict(TINY, dsc_hidden=64) if args.tiny else {}
        if "bf16_ascent" in p:
            kw["cache_features"] = True
        m = build(
            "glass",
            "paper",
            variant="m",
            pretrained=False,
            epochs=1,
            select_best_on_test=False,
            data_root=str(root),
            fast=() if p == "fp32" else p,
            **kw,
        )
        ds = get_dataset("synth", "wood", "train", root=root, transform=m.transform)
        _sync(device)
        t = time.perf_counter()
        m.fit(ds, device=device, progress=False)
        _sync(device)
        out["results"][p] = {
            "seconds": time.perf_counter() - t,
            "loss": m.history[-1].get("loss"),
            "record": m.fast_info(),
        }
        print(p, round(out["results"][p]["seconds"], 1), "s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["throughput", "epoch"])
    ap.add_argument("--method", choices=["glass", "patchcore"], default="glass")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="runs/device_check")
    ap.add_argument("--batches", default="8,32,64", help="batch sizes (the best is reported)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=32, help="training images of the epoch")
    ap.add_argument("--budget", type=float, default=100.0, help="seconds after which larger batches are skipped")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compile and CUDA-graph paths")
    ap.add_argument("--tiny", action="store_true", help="small sizes, for a CPU dry run")
    args = ap.parse_args()
    res = throughput(args) if args.step == "throughput" else epoch(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = res["step"] + ("-tiny" if args.tiny else "")
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"-> {out / name}.json")


if __name__ == "__main__":
    main()
