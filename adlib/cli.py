"""The ``adlib`` command line.

::

    adlib data synth --out DIR [--seed N] [--force]     generate the built-in benchmark
    adlib data info ROOT [--json] [--datasets-only]     what a data root holds; paper-profile readiness
    adlib weights list|check [--dir D]|import PATH...   pretrained files the paper profile needs (offline)
    adlib reproduce [--profile smoke|paper] [--only PATTERN] [--data-root P] [--device D] [--jobs N] [--parallel N] [--inplace] [--verbose]
    adlib reproduce --profile paper --rehearsal [--only PATTERN] [--parallel N]   the paper profile on miniature data
    adlib reproduce --profile paper --plan [--csv PATH] [--throughput TFLOPS]   the bill: runs, images, FLOPs, disk, GPU time
    adlib grid list [--profile P] [--only PATTERN] [--data-root D] [--store S] [--state S] [--json | --csv PATH]
    adlib grid run [--profile P] [--only PATTERN] [--limit N] [--backend local|slurm|submitit-local] [--store S]
                [--jobs N | --gpus 0,1,2,3 [--per-gpu K] | --devices D,D] [--skip-failed]
                [--partition P --account A --time MIN --cpus-per-task N --gpus-per-task N --mem-gb G
                 --array-parallelism N --slurm-option KEY=VALUE --logs DIR --wait]
                                                              the notebooks' runs as one grid (adlib.grid)
    adlib train METHOD --dataset D --category C [--profile smoke|paper] [--data-root P] [--out STORE]
                [--device D] [--variant V] [--epochs N] [--seed N] [--set KEY=VALUE ...]
                [--shots K] [--contamination EPS] [--calibration F] [the method's own options, e.g. adtr --labels]
    adlib test METHOD --dataset D --category C [same options]      writes the run's record.json
    adlib predict RUN IMAGES_OR_FOLDERS... [--out DIR] [--threshold VALUE | --normal DIR [--quantile Q]]
                [--npy] [--no-overlays] [--device D] [--tile T [--overlap F]]
                                                              a trained model on any images (adlib.predict)
    adlib export RUN [--format onnx|torchscript] [--out DIR] [--opset N] [--name NAME]
                                                              the model as ONNX + metadata, parity checked (adlib.export)

``train`` and ``test`` go through the results store (:mod:`adlib.results`), the notebooks' store:
a run trained here is reused by a notebook asking for the same job, and the other way round.
Method-specific options come from the method's config (``CLI_OPTIONS``; ``adlib train adtr --help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path


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

    from .data import DataError, dataset_dir
    from .data import dtd as _dtd
    from .data.info import describe_root

    try:
        found, missing = describe_root(args.root), None
    except DataError as exc:  # nothing known here: the readiness check still says what is needed
        if not Path(args.root).expanduser().exists():
            raise
        found, missing = {}, exc
    ready = None
    if not args.datasets_only:
        from .readiness import readiness

        ready = readiness(args.root, tables=found)
    if args.json:
        out = {k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v) for k, v in found.items()}
        if ready is not None:
            out["paper_profile"] = ready.as_dict()
        print(json.dumps(out, indent=2))
    else:
        for name, val in found.items():
            print(f"== {name}")
            if isinstance(val, pd.DataFrame):
                print(val.to_string(index=False))
            else:
                per = {}
                for _, cls in _dtd.images(dataset_dir(name, args.root)):
                    per[cls] = per.get(cls, 0) + 1
                print(
                    f"{len(val)} texture classes, {sum(per.values())} images: "
                    + ", ".join(f"{c} ({per.get(c, 0)})" for c in val)
                )
            print()
        if ready is not None:
            print(ready.text())
    if missing is not None:
        raise missing
    return 0


def _cmd_weights_list(args: argparse.Namespace) -> int:
    from .weights import list_table, needed

    specs = needed("paper")
    if args.json:
        print(json.dumps([s.as_dict() for s in specs], indent=2))
    else:
        print(list_table(specs))
    return 0


def _cmd_weights_check(args: argparse.Namespace) -> int:
    from .weights import check, check_table

    rows = check(args.dir)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(check_table(rows))
        bad = [r for r in rows if not r.ok]
        print()
        print(
            f"{len(rows) - len(bad)} of {len(rows)} found"
            + (
                f"; missing or unusable: {', '.join(r.spec.tag for r in bad)} (`adlib weights list` says where to "
                "get them, `adlib weights import FILE...` files them)"
                if bad
                else ""
            )
        )
    return 1 if any(not r.ok for r in rows) else 0


def _cmd_weights_import(args: argparse.Namespace) -> int:
    from .weights import WeightsImportError, import_file, needed

    specs = needed("paper")
    failed = 0
    done = []
    for path in args.paths:
        try:
            entry = import_file(path, dest=args.to, tag=args.tag, force=args.force, specs=specs)
        except WeightsImportError as exc:
            failed += 1
            print(f"adlib: refused: {_one_line(exc)}", file=sys.stderr)
            continue
        done.append(entry)
        if not args.json:
            how = "converted to safetensors" if entry.converted else "copied"
            print(
                f"{entry.source} -> {entry.dest} ({entry.tag}, {how}, sha256 {entry.sha256[:16]}"
                + (", replaced the previous file" if entry.replaced else "")
                + (f"; {entry.note}" if entry.note else "")
                + ")"
            )
    if args.json:
        print(json.dumps([e.as_dict() for e in done], indent=2))
    elif done and args.to:
        from .backbones import ENV_WEIGHTS_DIR, weights_dir

        if Path(args.to).expanduser().resolve() != weights_dir().resolve():
            print(f"adlib looks in {weights_dir()}: set {ENV_WEIGHTS_DIR}={args.to} to use the files filed here")
    return 2 if failed else 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    if getattr(args, "fast", None) is not None:
        from .fastpath import ENV, parse

        if args.profile != "paper":
            raise ValueError(
                "--fast goes with --profile paper (the smoke profile's numbers are pinned to the fp32 path)"
            )
        os.environ[ENV] = ",".join(parse(args.fast, "--fast"))  # read by every paper config (kernels inherit it)
    if args.plan:  # the bill before the run: nothing is executed or trained
        from .bill import bill
        from .paths import repo_root

        b = bill(args.profile, args.data_root, only=args.only, throughput=args.throughput, progress=True)
        out = b.write_csv(args.csv or repo_root() / "runs" / args.profile / "plan.csv")
        print(b.text())
        print(f"\nwritten: {out} (computed in {b.seconds:.1f} s)")
        return 0
    from .reproduce import run_notebooks

    if args.rehearsal:
        return _cmd_rehearse(args)
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


def _grid_setup(args: argparse.Namespace):
    """The store and the entries of ``adlib grid list|run``."""
    from .grid import entries
    from .results import ResultsStore

    store = ResultsStore.for_profile(args.profile, root=args.store, data_root=args.data_root, progress=False)
    return store, entries(args.profile, only=args.only, data_root=args.data_root, limit=args.limit)


def _cmd_grid_list(args: argparse.Namespace) -> int:
    from .grid import STATES, counts, table

    store, items = _grid_setup(args)
    frame = table(store, items)
    if args.state:
        frame = frame[frame["state"] == args.state]
    n = counts(table(store, items) if args.state else frame)
    if args.json:
        print(json.dumps({"store": str(store.root), "counts": n, "runs": frame.to_dict(orient="records")}, indent=2))
        return 0
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if len(frame):
        show = frame.drop(columns=["run_dir"] if not args.verbose else [])
        print(show.to_string(index=False, max_colwidth=70))
    print(f"\nstore {store.root}: " + ", ".join(f"{n[s]} {s}" for s in STATES) + f" ({n['total']} runs)")
    if args.csv:
        print(f"written: {args.csv}")
    return 0


def _parse_slurm_options(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-option {item!r}: expected KEY=VALUE (an sbatch option without its dashes)")
        out[key.strip().lstrip("-")] = value.strip()
    return out


def _check_cuda_devices(devices: list[str]) -> None:
    """One line before any run starts when a listed CUDA device does not exist here."""
    wanted = [d for d in devices if d.startswith("cuda")]
    if not wanted:
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for d in wanted:
        index = int(d.split(":", 1)[1]) if ":" in d and d.split(":", 1)[1].isdigit() else 0
        if index >= n:
            raise RuntimeError(f"device {d!r} requested but this machine has {n} CUDA device(s)")


def _cmd_grid_run(args: argparse.Namespace) -> int:
    from . import grid

    store, items = _grid_setup(args)
    todo, no_data = grid.pending(store, items, skip_failed=args.skip_failed)
    if no_data:
        sets = sorted({e.job.dataset for e in no_data})
        print(f"not run: {len(no_data)} run(s) of datasets not under the data root ({', '.join(sets)})")
    work = grid.bundles(todo)
    print(
        f"{len(items)} run(s) in the grid, {len(todo)} to run in {len(work)} task(s) "
        f"(runs sharing a prefix bundled) on the {args.backend} backend; store {store.root}"
    )
    if args.backend == "local":
        if args.gpus and args.devices:
            raise ValueError("--gpus and --devices do not go together: --devices takes any list of devices")
        devices = grid.parse_gpus(args.gpus) if args.gpus else None
        if args.devices:
            devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        _check_cuda_devices(devices or [args.device or ""])
        worker_slots = grid.slots(args.jobs or 1, devices, args.per_gpu or 1, args.device)
        outcomes = grid.run_local(store, work, worker_slots, progress=True)
    else:
        cluster = "slurm" if args.backend == "slurm" else "local"
        options = grid.SlurmOptions(
            gpus_per_task=args.gpus_per_task,
            cpus_per_task=args.cpus_per_task,
            timeout_min=args.time,
            partition=args.partition,
            account=args.account,
            array_parallelism=args.array_parallelism,
            mem_gb=args.mem_gb,
            extra=_parse_slurm_options(args.slurm_option),
        )
        logs = Path(args.logs) if args.logs else store.root.parent / "grid-logs"
        jobs = grid.submit(store, work, logs, cluster, options, device=args.device)
        if jobs:
            print(f"submitted {len(jobs)} task(s) as {jobs[0].job_id.split('_')[0]}; logs in {logs}")
        if not (args.wait or cluster == "local"):
            return 0
        outcomes = grid.gather(jobs)
    by = {}
    for o in outcomes:
        by[o["status"]] = by.get(o["status"], 0) + 1
    print("runs: " + (", ".join(f"{v} {k}" for k, v in sorted(by.items())) or "nothing to do"))
    for o in outcomes:
        if o["status"] == "failed":
            print(
                f"  FAILED {o['job']}: {o.get('error', '')}"
                + (f" ({o['run_dir']}/failed.json)" if o["run_dir"] else "")
            )
    return 1 if by.get("failed") else 0


def _cmd_rehearse(args: argparse.Namespace) -> int:
    """``adlib reproduce --rehearsal``: the paper profile on miniature data (:mod:`adlib.rehearsal`)."""
    from .rehearsal import STAMP, rehearse, root

    if args.profile != "paper":
        raise ValueError("--rehearsal rehearses the paper profile: use it with --profile paper")
    for name in ("data_root", "device", "out", "inplace"):
        if getattr(args, name):
            raise ValueError(
                f"--{name.replace('_', '-')} does not go with --rehearsal (it writes its own data and outputs)"
            )
    batch = rehearse(only=args.only, parallel=args.parallel, jobs=args.jobs, log_output=args.verbose)
    print(batch.summary())
    print(f"{STAMP}: executed notebooks, HTML, tables and figures under {root()}")
    return 1 if batch.failed else 0


def parse_overrides(items: list[str] | None, method: str | None = None) -> dict:
    """``["epochs=3", "variant=h", "lr=1e-4"]`` -> typed dict. With ``method`` (a registry name),
    each value is parsed as its config field's declared type
    (:func:`adlib.models.base.parse_field_value`: ``las=no`` is False, ``epochs=1.5`` and an
    unknown key are errors naming the key); without it, Python literals, ``true`` / ``false`` in any
    case as booleans, else strings."""
    import ast

    cfg_cls = None
    if method is not None:
        from .models.base import MODELS, NAMES, _load_all

        _load_all()
        if method in NAMES:
            cfg_cls = MODELS[NAMES[method].method].Config
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if k == "seed":
            try:
                out[k] = int(v)
            except ValueError:
                raise ValueError(f"--set seed={v}: seed expects an integer") from None
        elif cfg_cls is not None:
            from .models.base import parse_field_value

            out[k] = parse_field_value(cfg_cls, k, v)
        else:
            try:
                out[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                low = v.lower()
                out[k] = {"true": True, "false": False}[low] if low in ("true", "false") else v
    return out


def _method_options(method: str | None) -> tuple:
    """The method's own command-line options (its config's ``CLI_OPTIONS``), none if unknown."""
    if not method:
        return ()
    from .models.base import MODELS, NAMES, _load_all

    _load_all()
    entry = NAMES.get(method)
    return tuple(getattr(MODELS[entry.method].Config, "CLI_OPTIONS", ())) if entry is not None else ()


def _job(args: argparse.Namespace):
    """The results-store job and the store of ``adlib train`` / ``adlib test`` (the one run
    pipeline: :func:`adlib.results.run_job`'s layout, shared with the notebooks)."""
    from .protocols import check_protocol
    from .results import Job, ResultsStore

    overrides = parse_overrides(args.set, args.method)
    for key in ("variant", "epochs", "seed"):
        val = getattr(args, key, None)
        if val is not None:
            overrides[key] = val
    protocol = {
        "shots": args.shots,
        "contamination": args.contamination,
        "contamination_protocol": args.contamination_protocol,
        "calibration": args.calibration,
    }
    for opt in _method_options(args.method):
        val = getattr(args, _dest(opt.flag), None)
        if val is not None:
            opt.apply(val, overrides, protocol)
    if getattr(args, "fast", None) is not None:
        from .fastpath import parse

        overrides["fast"] = parse(args.fast, "--fast")
    seed = int(overrides.pop("seed", 0))
    job = Job.make(
        args.method, args.dataset, args.category, args.profile, seed, protocol=check_protocol(protocol), **overrides
    )
    job.key()  # an unknown method or config field is named here, before anything runs
    store = ResultsStore.for_profile(args.profile, root=args.out, data_root=args.data_root, device=args.device)
    return job, store


def _dest(flag: str) -> str:
    return "method_" + flag.lstrip("-").replace("-", "_")


def _legacy_hint(args: argparse.Namespace, job) -> str:
    """Where a model trained before the CLI wrote into the results store would be, if one is."""
    from .paths import repo_root

    base = Path(args.out) if args.out else repo_root() / "runs" / args.profile / "models"
    old = base / job.label / job.dataset / job.category
    if (old / "model.pt").is_file():
        return (
            f"; {old} holds a model in the former `adlib train` layout (before train and test went through "
            "the results store): train it again with the command above"
        )
    return ""


def _cmd_train(args: argparse.Namespace) -> int:
    job, store = _job(args)
    rec = store.train(job)
    print(f"trained {job} in {float(rec.get('train_seconds') or 0):.1f}s -> {store.run_dir(job)}")
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from .results import RECORD

    job, store = _job(args)
    try:
        rec = store.test(job)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}{_legacy_hint(args, job)}") from None
    print(" ".join(f"{k}={v:.4f}" for k, v in rec["metrics"].items()))
    print(f"record written to {store.run_dir(job) / RECORD}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_folder

    res = predict_folder(
        args.run,
        args.inputs,
        out=args.out,
        threshold=args.threshold,
        normal=args.normal,
        quantile=args.quantile,
        npy=args.npy,
        overlays=not args.no_overlays,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        fast=args.fast,
    )
    value = getattr(res.threshold, "value", res.threshold)
    flagged = "" if res.decisions is None else f", {int(res.decisions.sum())} anomalous at threshold {value:.6g}"
    print(f"{len(res.paths)} image(s) scored{flagged} -> {res.out / 'scores.csv'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    res = export(args.run, args.out, fmt=args.format, opset=args.opset, name=args.name)
    meta = res.metadata
    p = meta["parity"]
    h, w = meta["input"]["size_hw"]
    fmt = f"onnx, opset {meta['opset']}" if meta["format"] == "onnx" else "torchscript"
    print(f"{meta['registry_name']} exported ({fmt}; input uint8 RGB B x 3 x {h} x {w}) -> {res.path}")
    thr = meta["threshold"]
    stored = f"threshold {thr['value']:.6g} ({thr['rule']})" if thr else "no threshold (RUN/threshold.json absent)"
    print(f"metadata -> {res.metadata_path}; {stored}")
    print(
        f"parity vs PyTorch on {p['images']} random image(s): score max |diff| {p['score_max_abs_diff']:.2g}, "
        f"map max |diff| {p['map_max_abs_diff']:.2g} ({'ok' if p['ok'] else 'NOT within ' + str(p['tolerance'])})"
    )
    return 0 if p["ok"] else 1


#: help of ``--fast`` (adlib.fastpath)
FAST_HELP = (
    "opt-in fast paths, comma-separated: bf16 (autocast; AMX on the CPU needs ADLIB_NUMERICS=native), "
    "channels-last, features (patch features in the grid order), compile, cuda-graphs, smoothing (the maps' "
    "Gaussian on the device), bf16-ascent (GLASS's GAS in bf16, training), bf16-heads (GLASS/SimpleNet heads "
    "in bf16 at inference); none = fp32"
)


def _run_options(p: argparse.ArgumentParser, method: str | None = None, names: list[str] | None = None) -> None:
    p.add_argument(
        "method", help=f"a method or a variant's name: {', '.join(names) if names else 'glass, glass-m, ...'}"
    )
    p.add_argument("--dataset", required=True, help="mvtec, visa, mpdd, wfdd, synth, folder (your own images), ...")
    p.add_argument("--category", required=True)
    p.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    p.add_argument("--data-root", help="data root (default: $ADLIB_DATA, else <repo>/data)")
    p.add_argument("--out", help="results store (default: runs/<profile>/results, the notebooks' store)")
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
        "--calibration",
        type=float,
        metavar="F",
        help="hold out a fraction F of the normal training images (drawn with --seed); after training, "
        "their 0.99 score quantile is stored as the run's decision threshold (RUN/threshold.json)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--fast", metavar="PATHS", help=FAST_HELP + " (part of the run's key)")
    opts = _method_options(method)
    if opts:
        g = p.add_argument_group(f"{method} options (from its config)")
        for opt in opts:
            g.add_argument(
                opt.flag, dest=_dest(opt.flag), help=opt.help, choices=opt.choices, type=opt.type, metavar=opt.metavar
            )
    elif method is None:
        p.epilog = "method-specific options: adlib train METHOD --help"


def build_parser(method: str | None = None, names: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; ``method`` adds that method's own options to ``train`` / ``test``; ``names``
    (the registry's, :func:`adlib.models.available_names`) are listed in their help."""
    p = argparse.ArgumentParser(prog="adlib", description="Reproducible companion to GLASS, POUTA, ADL and ADTR.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error instead of its one line (or set ${DEBUG_ENV}=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: generate the built-in benchmark, inspect a data root")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="generate the built-in benchmark (synth, synth-weak, builtin-textures)")
    s.add_argument("--out", required=True, help="data root to write into")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="regenerate even if an up-to-date copy exists")
    s.set_defaults(func=_cmd_data_synth)
    i = dsub.add_parser(
        "info",
        help="categories, split sizes and defect types under a data root; what the paper profile needs and lacks",
    )
    i.add_argument("root", help="a data root or one dataset folder")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument(
        "--datasets-only",
        action="store_true",
        help="only what the root holds, without the paper-profile readiness check (datasets, categories, weights)",
    )
    i.set_defaults(func=_cmd_data_info)

    w = sub.add_parser("weights", help="pretrained files the paper profile needs: list, check, import (offline)")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wl = wsub.add_parser("list", help="every pretrained file the paper profile needs, with where to get it")
    wl.add_argument("--json", action="store_true", help="machine-readable output")
    wl.set_defaults(func=_cmd_weights_list)
    wc = wsub.add_parser(
        "check",
        help="which needed files are present (weights dir, Hugging Face cache, --dir); exit 1 if any is missing",
    )
    wc.add_argument("--dir", help="also look in this folder (files found there still need `adlib weights import`)")
    wc.add_argument("--json", action="store_true", help="machine-readable output")
    wc.set_defaults(func=_cmd_weights_check)
    wi = wsub.add_parser(
        "import",
        help="verify .safetensors/.pth files and file them where adlib looks (<weights dir>/<tag>.safetensors)",
    )
    wi.add_argument("paths", nargs="+", metavar="PATH", help="weights files (.safetensors, .pth, .bin)")
    wi.add_argument("--to", help="weights dir to file them in (default: $ADLIB_WEIGHTS_DIR, else <repo>/weights)")
    wi.add_argument("--tag", help="the timm tag the files must match (default: identified from their keys and shapes)")
    wi.add_argument("--force", action="store_true", help="replace a different file already filed for the tag")
    wi.add_argument("--json", action="store_true", help="machine-readable output")
    wi.set_defaults(func=_cmd_weights_import)

    r = sub.add_parser("reproduce", help="execute the notebooks with papermill")
    r.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    r.add_argument("--only", help="glob or substring of notebook paths to run")
    r.add_argument("--data-root", help="data root (default: $ADLIB_DATA, else <repo>/data)")
    r.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the profile's)")
    r.add_argument("--out", help="folder for executed copies (default: runs/<profile>)")
    r.add_argument("--fast", metavar="PATHS", help=FAST_HELP + " (--profile paper only; $ADLIB_FAST; part of the keys)")
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
    r.add_argument(
        "--rehearsal",
        action="store_true",
        help="with --profile paper: every notebook on miniature data in the real layouts, random weights, "
        "small sizes (runs/rehearsal; `make rehearse`)",
    )
    r.add_argument(
        "--plan",
        action="store_true",
        help="print the bill (runs, images, FLOPs, disk, GPU time per notebook) and write it as CSV; executes nothing",
    )
    r.add_argument("--csv", help="with --plan: where to write the bill (default: runs/<profile>/plan.csv)")
    r.add_argument(
        "--throughput",
        type=float,
        help="with --plan: GPU TFLOPS for the GPU time (default: measured in benchmarks/RESULTS.md, else assumed)",
    )
    r.set_defaults(func=_cmd_reproduce)

    g = sub.add_parser("grid", help="the notebooks' training runs as one grid: list their state, run the missing ones")
    gsub = g.add_subparsers(dest="grid_command", required=True)
    gl = gsub.add_parser("list", help="the runs of the notebooks and their state in the store (done, running, ...)")
    gr = gsub.add_parser("run", help="run the missing runs on a backend (local workers, Slurm); rerunning resumes")
    for q in (gl, gr):
        q.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
        q.add_argument("--only", help="glob or substring of notebook paths (a notebook, a paper: adtr)")
        q.add_argument("--data-root", help="data root (default: $ADLIB_DATA, else <repo>/data)")
        q.add_argument(
            "--store",
            help="the results store (default: runs/<profile>/results, or $ADLIB_RUNS/<profile>/results: "
            "where the notebooks read)",
        )
        q.add_argument("--limit", type=int, help="only the first N runs")
    gl.add_argument("--state", choices=["done", "running", "failed", "to do"], help="only the runs in this state")
    out = gl.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable output")
    out.add_argument("--csv", help="also write the table as CSV to this path")
    gl.set_defaults(func=_cmd_grid_list)
    gr.add_argument("--backend", choices=["local", "slurm", "submitit-local"], default="local")
    gr.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the profile's)")
    gr.add_argument("--skip-failed", action="store_true", help="leave runs that failed before (failed.json)")
    loc = gr.add_argument_group("local backend")
    loc.add_argument("--jobs", type=int, help="worker processes on --device (default 1)")
    loc.add_argument("--gpus", help="GPU indices, one worker per GPU (e.g. 0,1,2,3); each worker on cuda:i")
    loc.add_argument("--per-gpu", type=int, help="workers per GPU (or per --devices entry) for small runs (default 1)")
    loc.add_argument("--devices", help="any torch devices, one worker each (e.g. cuda:0,cuda:1 or cpu:0,cpu:1)")
    sl = gr.add_argument_group("slurm backend (submitit job array, one task per bundle of runs)")
    sl.add_argument("--partition", help="Slurm partition")
    sl.add_argument("--account", help="Slurm account")
    sl.add_argument("--time", type=int, default=24 * 60, help="time limit per task in minutes (default 1440)")
    sl.add_argument("--cpus-per-task", type=int, help="CPU cores per task")
    sl.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per task (default 1; 0 for CPU tasks)")
    sl.add_argument("--mem-gb", type=float, help="memory per task in GB")
    sl.add_argument("--array-parallelism", type=int, help="tasks of the array running at once (default 256)")
    sl.add_argument(
        "--slurm-option",
        action="append",
        metavar="KEY=VALUE",
        help="another #SBATCH option (repeatable), e.g. qos=high",
    )
    sl.add_argument("--logs", help="submitit's folder: per-task logs (default: runs/<profile>/grid-logs)")
    sl.add_argument("--wait", action="store_true", help="wait for the tasks and report their runs (default: exit)")
    gr.set_defaults(func=_cmd_grid_run)

    t = sub.add_parser("train", help="train a method on one category (resumes an interrupted run)")
    _run_options(t, method, names)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("test", help="evaluate a method trained by `adlib train`; writes its results record")
    _run_options(e, method, names)
    e.set_defaults(func=_cmd_test)

    pr = sub.add_parser(
        "predict", help="score any images with a trained model (RUN/model.pt): scores.csv, decisions, overlays"
    )
    pr.add_argument("run", metavar="RUN", help="a run folder holding model.pt (adlib train, the results store)")
    pr.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files, folders (recursive), globs")
    pr.add_argument("--out", help="output folder (default: RUN/predict)")
    thr = pr.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, metavar="VALUE", help="anomalous when score >= VALUE")
    thr.add_argument(
        "--normal",
        metavar="DIR",
        help="held-out normal images: the threshold is a quantile of their scores, stored in RUN/threshold.json",
    )
    pr.add_argument(
        "--quantile",
        type=float,
        metavar="Q",
        help="with --normal: the quantile (default 0.99); alone: recompute the stored threshold of a "
        "--calibration run from its held-out scores (RUN/calibration.json)",
    )
    pr.add_argument("--npy", action="store_true", help="also write the raw maps as maps/<name>.npy")
    pr.add_argument("--no-overlays", action="store_true", help="do not write overlays/<name>.png")
    pr.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: auto)")
    pr.add_argument(
        "--tile",
        type=int,
        metavar="T",
        help="tiled inference: images larger than T pixels cut into T x T tiles, maps averaged, score = max over tiles",
    )
    pr.add_argument("--overlap", type=float, metavar="F", help="with --tile: fraction of a tile shared (default 0.25)")
    pr.add_argument("--fast", metavar="PATHS", help=FAST_HELP + " (default: the path the model was trained with)")
    pr.set_defaults(func=_cmd_predict)

    ex = sub.add_parser(
        "export", help="export a trained model (RUN/model.pt) as ONNX (or TorchScript) with its metadata JSON"
    )
    ex.add_argument("run", metavar="RUN", help="a run folder holding model.pt (adlib train, the results store)")
    ex.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default="onnx",
        help="onnx (default; every method exports) or torchscript (a traced module, torch.jit.load)",
    )
    ex.add_argument("--out", help="output folder (default: RUN/export)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    ex.add_argument("--name", default="model", help="file name stem: NAME.onnx and NAME.json (default: model)")
    ex.set_defaults(func=_cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    method = _method_in(argv)
    names = None
    if method is not None or ({"train", "test"} & set(argv)):
        from .models import available_names

        names = available_names()
    args = build_parser(method, names).parse_args(argv)
    _setup_logging(args.verbose)
    expected = _expected_errors()
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(
            "adlib: interrupted (finished runs are kept; an interrupted one resumes from its checkpoint)",
            file=sys.stderr,
        )
        return 130
    except expected as exc:
        if debug:
            raise
        print(f"adlib: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - unexpected: still one line, with how to see more
        if debug:
            raise
        print(
            f"adlib: error: {type(exc).__name__}: {_one_line(exc)} (unexpected; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


#: environment variable that shows tracebacks (like ``--debug``)
DEBUG_ENV = "ADLIB_DEBUG"


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can cause and fix (data, config, device, weights, checkpoints, results):
    reported as one line."""
    import pickle

    from .data import DataError

    return (DataError, FileNotFoundError, ValueError, PermissionError, pickle.UnpicklingError, RuntimeError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _method_in(argv: list[str]) -> str | None:
    """The METHOD of ``adlib [-v] train|test METHOD ...`` (the first word after the command)."""
    words = [a for a in argv if not a.startswith("-")]
    if len(words) < 2 or words[0] not in ("train", "test"):
        return None
    from .models.base import NAMES, _load_all

    _load_all()
    return next((w for w in words[1:] if w in NAMES), words[1])


if __name__ == "__main__":
    sys.exit(main())
