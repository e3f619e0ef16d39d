"""The ``adlib`` command line.

::

    adlib data synth --out DIR [--seed N] [--force]     generate the built-in benchmark
    adlib data info ROOT [--json]                       what a data root holds
    adlib reproduce [--profile smoke|paper] [--only PATTERN] [--data-root P] [--device D] [--inplace]
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
    print(f"built-in benchmark in {args.out} ({len(cats)} categories, seed {args.seed}) ready in {time.perf_counter() - t:.1f}s")
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
    )
    print(batch.summary())
    return 1 if batch.failed else 0


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
    r.add_argument("--inplace", action="store_true", help="write executed notebooks back into notebooks/ (refreshes committed outputs)")
    r.set_defaults(func=_cmd_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from .data import DataError

    try:
        return args.func(args)
    except DataError as exc:
        print(f"adlib: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
