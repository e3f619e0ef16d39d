"""POUTA Table VI: parameters, FLOPs at 224 px and inference time per image of POUTA, Vanilla and PatchCore.

Paper (POUTA, Table VI): POUTA 15.02 M parameters, 35.37 GFLOPs, 32 ms/img; Vanilla 28.68 M,
39.38 GFLOPs, 52 ms/img; PatchCore "-" parameters, "-" FLOPs, 38 ms/img (their GPU, not named).

What is measured (the measurement functions are in :mod:`adlib.complexity`)
    - Parameters: ``count_parameters`` of the network that runs at inference: POUTA's / Vanilla's
      ``model.net`` (reconstructive + discriminative network; MSS side heads included, they are
      parameters of the model even though inference skips them), PatchCore's frozen
      WideResNet-50 truncated after ``layer3`` (the memory bank is data, listed separately).
    - FLOPs: ``flops_by_operator`` summed (= ``count_flops``: ``torch.utils.flop_counter.
      FlopCounterMode``, a multiply-add = 2) of one 224 x 224 image through the timed inference
      path, and that total / 2 (= MACs, what ``thop`` / ``ptflops`` print as "FLOPs").
      Convolutions and matrix products only.
    - Time: ``time_inference``: ``--warmup`` discarded batches, then ``--repeats`` batches each
      timed with the device synchronised before every clock read; median batch time / batch size.
      The timed path produces the image score and the pixel map at 224 x 224 from a batch already
      on the device (no data loading):
        * POUTA / Vanilla: ``model.heat_map`` (the network without the training-only MSS heads) +
          ``image_score`` (21 x 21 average pool, max);
        * PatchCore: ``model.score`` (WideResNet-50 layer2+3, 3x3 neighbourhood aggregation,
          1024-D patch features of the 28 x 28 grid, exact nearest-neighbour search against the
          memory bank, the paper's reweighted image score) + ``anomaly_maps`` (bilinear
          up-sampling to 224, sigma-4 Gaussian). The memory bank is ``--bank-size`` random
          1024-D rows (default 18,972 = 10 % coreset of 242 images x 784 patches, the mean
          MVTec AD training-set size): the brute-force search costs the same whatever the rows hold,
          so no fit is needed.
    - Weights: random initialisation everywhere (``pretrained=False`` for PatchCore; POUTA and
      Vanilla are trained from scratch anyway). Neither speed nor FLOPs depend on the weights.

    .venv/bin/python benchmarks/bench_pouta.py --device cpu --batch-size 1 --repeats 5 --threads 2
    .venv/bin/python benchmarks/bench_pouta.py --device cuda --batch-size 8 --repeats 20 --bf16 --channels-last --out runs/bench_pouta.json

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

from adlib.complexity import count_parameters, flops_by_operator, flops_to_macs, time_batches
from adlib.papers.pouta import PAPER_BANK_SIZE, inference_path

#: Table VI of the POUTA paper (None: "-" in the table)
PAPER = {
    "pouta": {"label": "POUTA", "parameters": 15.02e6, "gflops": 35.37, "ms": 32.0},
    "vanilla": {"label": "Vanilla", "parameters": 28.68e6, "gflops": 39.38, "ms": 52.0},
    "patchcore": {"label": "PatchCore", "parameters": None, "gflops": None, "ms": 38.0},
}
IMAGE_SIZE = 224
#: 10 % coreset of the mean MVTec AD training set (3629 images / 15 categories = 242) x 28 x 28 patches
DEFAULT_BANK = PAPER_BANK_SIZE


def _fmt_m(n):
    return "—" if n is None else f"{n / 1e6:.2f} M"


def _fmt_g(n):
    return "—" if n is None else f"{n / 1e9:.2f} G"


def markdown_table(rows: list[dict], device_name: str) -> str:
    head = (
        "| model | parameters (ours) | parameters (paper) | FLOPs @224, FlopCounterMode (MAC = 2) | "
        f'FLOPs / 2 (= MACs) | paper "FLOPs" | ms/img ours ({device_name}), median [min–max] | ms/img paper (their GPU) |'
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        paper_g = "—" if r["paper_gflops"] is None else f"{r['paper_gflops']:.2f} G"
        paper_ms = "—" if r["paper_ms"] is None else f"{r['paper_ms']:.0f}"
        lines.append(
            f"| {r['model']} | {_fmt_m(r['parameters'])} ({r['parameters']:,}) | {_fmt_m(r['paper_parameters'])} | "
            f"{_fmt_g(r['flops'])} | {_fmt_g(r['macs'])} | {paper_g} | "
            f"{r['ms_per_image']:.0f} [{r['ms_min']:.0f}–{r['ms_max']:.0f}] | {paper_ms} |"
        )
    return "\n".join(lines)


def flops_reading(rows: list[dict]) -> list[str]:
    """Which of FLOPs / MACs the paper's numbers are closer to, per model with a paper value."""
    out = []
    for r in rows:
        if r["paper_gflops"] is None:
            continue
        p = r["paper_gflops"] * 1e9
        out.append(
            f"{r['model']}: ours / paper = {r['flops'] / p:.2f} counting a multiply-add as 2 FLOPs, "
            f"{r['macs'] / p:.2f} counting it as 1 (MACs)"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed batches (after --warmup discarded ones)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded batches before timing")
    ap.add_argument("--models", default="pouta,vanilla,patchcore", help="comma-separated subset")
    ap.add_argument("--bank-size", type=int, default=DEFAULT_BANK, help="PatchCore memory-bank rows")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    ap.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (FlopCounterMode counts from shapes: same FLOPs)"
    )
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out", help="also write the results: .json (rows + settings) or anything else (Markdown)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PAPER))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(PAPER)}")

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(max(args.batch_size, 1), 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    imagenet = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )

    dev_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    rows = []
    for name in names:
        t0 = time.perf_counter()
        m = inference_path(
            name, "paper", device, bank_size=args.bank_size, bf16=args.bf16, channels_last=args.channels_last
        )
        x = (images - imagenet[0]) / imagenet[1] if m["normalize"] else images  # PatchCore: ImageNet-normalised
        x = x[: args.batch_size].to(device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        params = count_parameters(m["module"])
        x1 = x[:1]
        # one counting pass (FlopCounterMode counts from shapes: the same under bf16); total = sum over operators
        by_op = flops_by_operator(m["infer"], x1)
        flops = sum(by_op.values())
        times = time_batches(m["infer"], x, device, warmup=args.warmup, repeats=args.repeats)
        per_img = [1000.0 * t / args.batch_size for t in times]
        median = statistics.median(per_img)  # = time_inference(m["infer"], x, device, args.warmup, args.repeats)
        p = PAPER[name]
        rows.append(
            {
                "model": p["label"],
                "key": name,
                "parameters": params,
                "paper_parameters": p["parameters"],
                "flops": flops,
                "macs": flops_to_macs(flops),
                "flops_by_operator": by_op,
                "paper_gflops": p["gflops"],
                "ms_per_image": median,
                "ms_min": min(per_img),
                "ms_max": max(per_img),
                "batch_seconds": times,
                "paper_ms": p["ms"],
                "timed_path": m["notes"],
                "seconds_total": round(time.perf_counter() - t0, 2),
            }
        )
        del m

    settings = {
        "device": dev_name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "image_size": IMAGE_SIZE,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "bf16": args.bf16,
        "channels_last": args.channels_last,
        "bank_size": args.bank_size,
        "threads": torch.get_num_threads(),
        "weights": "random initialisation (pretrained=False)",
    }
    table = markdown_table(rows, dev_name)
    reading = flops_reading(rows)
    head = (
        f"device: {dev_name}; torch {torch.__version__}; {IMAGE_SIZE} px; batch {args.batch_size}; "
        f"{args.warmup} discarded + {args.repeats} timed batches (median); bf16 {args.bf16}; "
        f"channels_last {args.channels_last}; random weights; PatchCore bank {args.bank_size} x 1024"
    )
    print(head)
    print()
    print(table)
    print()
    for r in rows:
        ops = ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in r["flops_by_operator"].items())
        print(f"- {r['model']}: timed {r['timed_path']}; FLOPs by operator: {ops}; {r['seconds_total']} s")
    for line in reading:
        print(f"- {line}")
    total = time.perf_counter() - t_start
    print(f"- script wall time {total:.1f} s")

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            out.write_text(
                json.dumps(
                    {
                        "settings": settings,
                        "rows": rows,
                        "flops_reading": reading,
                        "markdown": table,
                        "seconds": round(total, 2),
                    },
                    indent=2,
                )
                + "\n"
            )
        else:
            out.write_text(head + "\n\n" + table + "\n\n" + "\n".join(f"- {line}" for line in reading) + "\n")
        print(f"- written to {out}")


if __name__ == "__main__":
    main()
