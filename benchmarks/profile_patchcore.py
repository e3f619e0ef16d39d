"""Where PatchCore's scoring time goes: backbone / patch features / NN search / reweighting / maps.

Paper architecture (WideResNet-50 random init -- weights do not change the speed -- layers 2 + 3,
1024-D), images ``--size`` px fed directly (no resize), a memory bank of ``--bank`` rows (default
4147: what 32 images at 288 px with a 10 % coreset give) drawn from the patch features of random
images (which rows does not change the speed), batch 8. Each stage timed separately on the same
batch, medians of ``--repeats`` after one warm-up; then the whole of ``PatchCore.score`` +
:func:`adlib.models.patchcore.anomaly_maps` for comparison.

    ADLIB_NUMERICS=native .venv/bin/python benchmarks/profile_patchcore.py --threads 2
    .venv/bin/python benchmarks/profile_patchcore.py            # reference numerics, 1 thread
    ADLIB_NUMERICS=native .venv/bin/python benchmarks/profile_patchcore.py --threads 2 --nn-backend bf16 --features

Results are recorded in benchmarks/RESULTS.md (PatchCore scoring section).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import adlib
from adlib import numerics
from adlib.models import build
from adlib.models.features import reduce_dims, unfold_patches
from adlib.models.patchcore import (
    NN_BACKENDS,
    anomaly_maps,
    nearest_neighbors,
    reweighted_image_scores,
)


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=288, help="input side in pixels (288: the issue's setting)")
    ap.add_argument("--bank", type=int, default=4147, help="memory bank rows")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: what the numerics mode sets)")
    ap.add_argument("--nn-backend", default="torch", choices=NN_BACKENDS, help="PatchCoreConfig.nn_backend")
    ap.add_argument(
        "--features", action="store_true", help="the shared fast path 'features' (patch features in the grid order)"
    )
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(
        "patchcore",
        "paper",
        pretrained=False,
        device="cpu",
        nn_backend=args.nn_backend,
        fast=("features",) if args.features else (),
    )
    model.to(torch.device("cpu"))  # the lifecycle's device move puts the network on its fast paths
    net = model.net
    cfg = model.cfg
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    # a bank from real patch features of random images
    feats = model.patch_features(torch.randn(max(1, args.bank // 1296 + 1), 3, args.size, args.size))
    flat = feats.reshape(-1, feats.shape[-1])
    pick = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(0))[: args.bank]
    model.memory_bank = flat[pick].clone()
    bank = model.memory_bank

    with torch.no_grad():
        fx = net.features.backbone
        levels = fx(x)
        f = net.features(x)
        B, h, w, D = f.shape
        patches = f.reshape(B, h * w, D)
        d, i = nearest_neighbors(patches.reshape(-1, D), bank, cfg.nn_query_chunk, cfg.nn_bank_chunk)
        d, i = d.view(B, -1), i.view(B, -1)
        grid = d.view(B, h, w)

        def features_only():  # the released unfold + upsample + pooling, given the backbone's levels
            layers = list(levels.values())
            per = []
            for lv in layers:
                u = unfold_patches(lv, cfg.patch_size)
                if u.shape[-2:] != (h, w):
                    u = torch.nn.functional.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
                per.append(u.permute(0, 2, 3, 1).reshape(B * h * w, -1))
            return reduce_dims(per, cfg.pretrain_embed_dim, cfg.target_embed_dim)

        stages = {
            "backbone (WRN-50 to layer3)": lambda: fx(x),
            "patch features, released (unfold, upsample, pool)": features_only,
            "patch features + backbone, configured": lambda: net.extract(x),
            "NN search, torch (default)": lambda: nearest_neighbors(
                patches.reshape(-1, D), bank, cfg.nn_query_chunk, cfg.nn_bank_chunk
            ),
            "NN search, configured": lambda: net.search(patches.reshape(-1, D)),
            "reweighting (k-NN of m* in the bank)": lambda: reweighted_image_scores(
                patches, d, i, bank, cfg.num_neighbors, cfg.nn_bank_chunk
            ),
            "up-sampling + smoothing (scipy)": lambda: anomaly_maps(grid, (args.size, args.size), cfg.smooth_sigma),
            "score (configured)": lambda: model.score(x),
            "score + maps (end to end, configured)": lambda: anomaly_maps(
                model.score(x)[1], (args.size, args.size), cfg.smooth_sigma
            ),
        }
        times = {name: _median_time(fn, args.repeats) for name, fn in stages.items()}
    print(
        f"adlib {adlib.__version__}; torch {torch.__version__}; numerics {numerics.mode()}; "
        f"threads {torch.get_num_threads()}; input {args.size}x{args.size}; batch {B}; grid {h}x{w}; "
        f"bank {bank.shape[0]} x {bank.shape[1]}; nn_backend {cfg.nn_backend}; "
        f"fast {tuple(cfg.fast)}"
    )
    for name, t in times.items():
        print(f"  {name:52s} {1000 * t:9.1f} ms/batch  {B / t:7.2f} img/s")


if __name__ == "__main__":
    main()
