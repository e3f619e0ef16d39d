"""The ``adlib`` command line.

::

    adlib data synth --out DIR [--seed N] [--force]     generate the built-in benchmark
    adlib data info ROOT [--json]                       what a data root holds
    adlib reproduce [--profile smoke|paper] [--only PATTERN] [--data-root P] [--device D] [--jobs N] [--parallel N] [--inplace] [--verbose]
    adlib train METHOD --dataset D --category C [--profile smoke|paper] [--data-root P] [--out DIR]
                [--device D] [--variant V] [--epochs N] [--seed N] [--set KEY=VALUE ...]
                [--shots K] [--contamination EPS] [--labels none|image|pixel] [--anomalies confetti|real:N]
    adlib test METHOD --dataset D --category C [same options]      writes metrics.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.synth import generate_benchmark

    t = time.perf_counter()
    manifest = generate_benchmark(args.out, seed=args.seed, force=args.force)
    cats = manifest.get("categories", {})
    print(
        f"built-in benchmark in {args.out} ({len(cats)} categories, seed {args.seed}) ready in {time.perf_counter() - t:.1f}s"
    )
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data.info import describe_root

    found = describe_root(args.root)
    if args.json:
        out = {k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v) for k, v in found.items()}
        print(json.dumps(out, indent=2))
        return 0
    for name, val in found.items():
        print(f"== {name}")
        if isinstance(val, pd.DataFrame):
            print(val.to_string(index=False))
        else:
            print(f"{len(val)} texture classes: {', '.join(val)}")
        print()
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run_notebooks

    batch = run_notebooks(
        profile=args.profile,
        data_root=args.data_root,
        device=args.device,
        only=args.only,
        out_dir=args.out,
        inplace=args.inplace,
        jobs=args.jobs,
        log_output=args.verbose,
        parallel=args.parallel,
        html=not args.no_html,
    )
    print(batch.summary())
    return 1 if batch.failed else 0


def _spec(args: argparse.Namespace):
    from .runner import RunSpec, parse_overrides

    overrides = parse_overrides(args.set)
    for key in ("variant", "epochs", "seed"):
        val = getattr(args, key, None)
        if val is not None:
            overrides[key] = val
    from .protocols import check_protocol

    real = None
    if getattr(args, "labels", None) is not None:
        overrides["variant"] = "normal" if args.labels == "none" else args.labels
    if getattr(args, "anomalies", None) is not None:
        source, real = parse_anomalies(args.anomalies)
        overrides["anomalies"] = source
    protocol = check_protocol(
        {
            "shots": getattr(args, "shots", None),
            "contamination": getattr(args, "contamination", None),
            "contamination_protocol": getattr(args, "contamination_protocol", None),
            "real_anomalies": real,
            "real_holdout": getattr(args, "real_holdout", None),
        }
    )
    return RunSpec(
        args.method,
        args.dataset,
        args.category,
        args.profile,
        args.data_root,
        args.out,
        args.device,
        overrides,
        protocol,
    )


def parse_anomalies(text: str) -> tuple[str, int | None]:
    """``--anomalies``: ``confetti`` -> ``("confetti", None)``; ``real:N`` -> ``("real", N)`` (N real
    labelled anomalies per defect type from the test split, protocol ``real_anomalies``)."""
    if text == "confetti":
        return "confetti", None
    if text.startswith("real:"):
        try:
            n = int(text[5:])
        except ValueError:
            n = 0
        if n >= 1:
            return "real", n
    raise ValueError(f"--anomalies must be 'confetti' or 'real:N' with N >= 1 (per defect type), got {text!r}")


def _cmd_train(args: argparse.Namespace) -> int:
    from .runner import train

    rec = train(_spec(args))
    print(
        f"trained {args.method} on {args.dataset}/{args.category} in {rec['train_seconds']:.1f}s -> {_spec(args).run_dir()}"
    )
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from .runner import test

    rec = test(_spec(args))
    print(" ".join(f"{k}={v:.4f}" for k, v in rec["metrics"].items()))
    print(f"metrics written to {_spec(args).run_dir() / 'metrics.json'}")
    return 0


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", help="glass, simplenet, patchcore, ...")
    p.add_argument("--dataset", required=True, help="mvtec, visa, mpdd, wfdd, synth, ...")
    p.add_argument("--category", required=True)
    p.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    p.add_argument("--data-root", help="data root (default: $ADLIB_DATA, else <repo>/data)")
    p.add_argument("--out", help="runs folder (default: runs/<profile>/models)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the profile's)")
    p.add_argument("--variant", help="method variant, e.g. m, h or j for glass")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--shots", type=int, help="few-shot: train on this many normal images, drawn with --seed (default: all)"
    )
    p.add_argument(
        "--contamination",
        type=float,
        metavar="EPS",
        help="hide test anomalies among the training images, a fraction EPS of them (ADL protocol, drawn with --seed)",
    )
    p.add_argument(
        "--contamination-protocol",
        choices=["leak-free", "released"],
        help="leak-free (default): the hidden anomalies leave the test set; released: they stay (ADL's code)",
    )
    p.add_argument(
        "--labels",
        choices=["none", "image", "pixel"],
        help="adtr: train with normal images only (none, default), or adapt with image- or pixel-level labels (push-pull, Eq. 6-9)",
    )
    p.add_argument(
        "--anomalies",
        metavar="confetti|real:N",
        help="adtr: anomalies for --labels image/pixel: FCDD confetti noise (default), or N real labelled anomalies "
        "per defect type taken from the test split (removed from evaluation)",
    )
    p.add_argument(
        "--real-holdout",
        type=int,
        metavar="M",
        help="with --anomalies real:N: hold M >= N anomalies per defect type out of the test set (default N), "
        "so runs with different N share one test set",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adlib", description="Reproducible companion to GLASS, POUTA, ADL and ADTR.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: generate the built-in benchmark, inspect a data root")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="generate the built-in benchmark (synth, synth-weak, builtin-textures)")
    s.add_argument("--out", required=True, help="data root to write into")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="regenerate even if an up-to-date copy exists")
    s.set_defaults(func=_cmd_data_synth)
    i = dsub.add_parser("info", help="categories, split sizes and defect types under a data root")
    i.add_argument("root", help="a data root or one dataset folder")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_data_info)

    r = sub.add_parser("reproduce", help="execute the notebooks with papermill")
    r.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    r.add_argument("--only", help="glob or substring of notebook paths to run")
    r.add_argument("--data-root", help="data root (default: $ADLIB_DATA, else <repo>/data)")
    r.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the profile's)")
    r.add_argument("--out", help="folder for executed copies (default: runs/<profile>)")
    r.add_argument(
        "--inplace",
        action="store_true",
        help="write executed notebooks back into notebooks/ (refreshes committed outputs)",
    )
    r.add_argument(
        "--jobs",
        type=int,
        help="worker processes for the training grids in the notebooks (default: each notebook's, 2)",
    )
    r.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="notebooks executed at the same time, longest first (default 1; the numbers do not depend on it)",
    )
    r.add_argument("--no-html", action="store_true", help="do not write HTML renderings to runs/<profile>/html")
    r.add_argument("--verbose", action="store_true", help="stream the notebooks' output (run progress) to the console")
    r.set_defaults(func=_cmd_reproduce)

    t = sub.add_parser("train", help="train a method on one category (resumes an interrupted run)")
    _run_options(t)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("test", help="evaluate a trained method on the category's test split; writes metrics.json")
    _run_options(e)
    e.set_defaults(func=_cmd_test)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from .data import DataError

    try:
        return args.func(args)
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"adlib: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
