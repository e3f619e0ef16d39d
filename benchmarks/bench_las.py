"""LAS throughput: GLASS local anomaly synthesis for a batch of 8 images at 288x288 on the CPU.

Synthesis must never be what training waits for. This times `LocalAnomalySynthesizer` on real
benchmark images (built-in `synth` categories, foreground masks on) with the built-in texture
bank (or DTD when present under the data root), one image at a time as a data-loader worker
would, and reports images per second over several batches after one warm-up batch.

    .venv/bin/python benchmarks/bench_las.py [--data-root data] [--batches 10] [--threads 1]

Results are recorded in benchmarks/RESULTS.md.
"""

import argparse
import platform
import time

import numpy as np
import torch

from adlib.data import ImageTransform, get_dataset
from adlib.data.textures import texture_source
from adlib.synthesis.foreground import estimate_foreground
from adlib.synthesis.las import LocalAnomalySynthesizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--category", default="nut")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=288)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (a loader worker uses 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tf = ImageTransform(resize=args.size, normalize=True)
    ds = get_dataset("synth", args.category, "train", root=args.data_root, transform=tf)
    raw = get_dataset(
        "synth",
        args.category,
        "train",
        root=args.data_root,
        transform=ImageTransform(resize=args.size, normalize=False),
    )
    images = [ds[i].image for i in range(args.batch_size)]
    fgs = [
        torch.from_numpy(estimate_foreground((raw[i].image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)))
        for i in range(args.batch_size)
    ]
    tex = texture_source(args.data_root)
    las = LocalAnomalySynthesizer(image_size=args.size, textures=tex)
    g = torch.Generator().manual_seed(0)

    def batch():
        for x, fg in zip(images, fgs):
            las(x, g, foreground=fg)

    batch()  # warm-up
    times = []
    for _ in range(args.batches):
        t = time.perf_counter()
        batch()
        times.append(time.perf_counter() - t)
    per_batch = float(np.median(times))
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}, torch {torch.__version__}"
    )
    print(f"texture source: {tex.description}")
    print(
        f"LAS batch of {args.batch_size} at {args.size}x{args.size}: median {per_batch * 1000:.1f} ms/batch, "
        f"{args.batch_size / per_batch:.1f} img/s (one process); foreground estimation not included"
    )


if __name__ == "__main__":
    main()
