"""ADTR cost: parameters, FLOPs, inference time per image and training-step time.

The paper gives no cost numbers (only an excerpt and secondary summaries were available), so this
records what this implementation costs, for planning paper-profile runs:

- Parameters of the reconstructor (``model.net``) and of the frozen backbone (``model.features``).
- FLOPs (``torch.utils.flop_counter`` via :mod:`adlib.complexity`; a multiply-add = 2) of one image:
  the backbone stages (with resize + concat) and the reconstructor; the score map, its up-sampling
  and pooling are not matrix products and are not counted.
- Inference ms/image: median of ``--repeats`` synchronised batches (``adlib.complexity.time_inference``).
- Training: ms per image of one AdamW step on cached features (the normal-only stage: the backbone
  runs once per image per fit, not per epoch), and of one confetti adaptation step (confetti noise
  and backbone on the replaced half of the batch, then L_px), median of ``--repeats``.

Weights are random (``pretrained=False``): cost does not depend on them.

    .venv/bin/python benchmarks/bench_adtr.py --profile smoke --threads 2
    .venv/bin/python benchmarks/bench_adtr.py --profile paper --threads 2 --batch-size 2 --repeats 3
    .venv/bin/python benchmarks/bench_adtr.py --profile paper --device cuda --batch-size 16 --repeats 20 --out runs/bench_adtr.json

Results are recorded in benchmarks/RESULTS.md with the machine and settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from adlib.complexity import count_flops, count_parameters, time_inference
from adlib.models import build
from adlib.models.adtr import image_score


def measure(profile: str, device: str, batch_size: int, repeats: int) -> dict:
    model = build("adtr", profile, pretrained=False, variant="pixel").to(device)
    size = model.cfg.image_size
    x = torch.rand(batch_size, 3, size, size, device=device)

    def infer(imgs):
        maps = model.score_maps(imgs)
        return image_score(maps, model.cfg.score_pool)

    out = {
        "profile": profile,
        "device": device,
        "image_size": size,
        "grid": model.cfg.grid,
        "backbone": model.cfg.backbone,
        "layers": list(model.cfg.layers),
        "feature_channels": int(model.features.channels),
        "reconstructor_parameters": count_parameters(model.net),
        "backbone_parameters": count_parameters(model.features),
        # backbone + resize/concat under no_grad; the reconstructor with autograd on (FlopCounterMode's
        # module tracker fails on nn.MultiheadAttention under no_grad in this torch): forward FLOPs either way
        "gflops_backbone": count_flops(model.features, x[:1]) / 1e9,
        "gflops_reconstructor": count_flops(model.net, model.extract(x[:1]), no_grad=False) / 1e9,
        "infer_ms_per_image": time_inference(infer, x, device, warmup=1, repeats=repeats),
    }
    f = model.extract(x)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model.normal_step(f)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out["normal_step_ms_per_image"] = 1000 * statistics.median(times[1:]) / batch_size
    u8 = (x.cpu() * 255).round().to(torch.uint8)
    model.opt_stage = "adapt"
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        fb, yg, yi = model.mix_batch(torch.arange(batch_size), f, u8, None)
        model.adapt_step(fb, yg, yi)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out["confetti_step_ms_per_image"] = 1000 * statistics.median(times[1:]) / batch_size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = measure(args.profile, args.device, args.batch_size, args.repeats)
    res.update(
        torch=torch.__version__,
        machine=platform.machine(),
        threads=torch.get_num_threads(),
        batch_size=args.batch_size,
        gpu=torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
    )
    text = json.dumps(res, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
