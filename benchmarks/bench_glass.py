"""GLASS inference throughput and training time per epoch.

Measured as the GLASS authors do (implementation-notes.md, "Throughput"): backbone + adaptor +
discriminator only, batch 8, the first batch discarded, mean images per second, the GPU
synchronised before every clock read. Also end to end (plus image score, bilinear up-sampling and
the sigma-4 Gaussian filter of the pixel map). Weights do not change the speed, so the paper
architecture is timed with random weights when pretrained ones are not available.

    .venv/bin/python benchmarks/bench_glass.py --config paper --device cpu --batches 5
    .venv/bin/python benchmarks/bench_glass.py --config paper --device cuda --bf16 --channels-last --compile --batch-size 64
    .venv/bin/python benchmarks/bench_glass.py --config smoke --train-category wood   # + one smoke epoch

Results are recorded in benchmarks/RESULTS.md with the machine and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from adlib.models import build
from adlib.models.glass import image_score, smooth_map


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["smoke", "paper"], default="paper", help="which profile's architecture")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=10, help="timed batches (after one discarded)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    ap.add_argument("--train-category", help="also time one training epoch on this built-in category")
    args = ap.parse_args()

    device = torch.device(args.device)
    model = build("glass", args.config, variant="m", pretrained=False)
    model.to(device)
    model.eval()
    size = model.transform.output_size((288, 288))
    if args.channels_last:
        model.features.backbone.model.to(memory_format=torch.channels_last)
    if args.compile:
        model.features.backbone.model = torch.compile(model.features.backbone.model)
    x = torch.randn(args.batch_size, 3, *size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def core():
        with amp:
            return model.score_grid(x)

    def e2e():
        grid = core().float()
        image_score(grid)
        return smooth_map(grid, size, model.cfg.smooth_sigma)

    results = {}
    for name, fn in (("backbone+adaptor+discriminator", core), ("end to end (+ upsample + gaussian)", e2e)):
        fn()  # first batch discarded
        _sync(device)
        t = time.perf_counter()
        for _ in range(args.batches):
            fn()
        _sync(device)
        dt = time.perf_counter() - t
        results[name] = args.batch_size * args.batches / dt

    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {dev}; torch {torch.__version__}; config {args.config} ({model.cfg.backbone}, {size[0]}x{size[1]}); "
        f"batch {args.batch_size}; bf16 {args.bf16}; channels_last {args.channels_last}; compile {args.compile}"
    )
    for name, ips in results.items():
        print(f"  {name}: {ips:.1f} img/s")

    if args.train_category:
        from adlib.data import get_dataset

        m = build("glass", args.config, variant="m", pretrained=False, epochs=1)
        ds = get_dataset("synth", args.train_category, "train", transform=m.transform)
        t = time.perf_counter()
        m.fit(ds, device=device, progress=False)
        print(
            f"  one training epoch on synth/{args.train_category} ({len(ds)} images, {args.config} config): {time.perf_counter() - t:.1f} s "
            "(includes LAS preparation and foreground estimation)"
        )


if __name__ == "__main__":
    main()
