"""``adlib grid``: the notebooks' training runs as one grid, on several GPUs or on Slurm, resumable.

>>> entries = grid.entries("paper", only="adtr")              # doctest: +SKIP
>>> print(grid.table(ResultsStore.for_profile("paper"), entries))  # doctest: +SKIP

**Which runs.** :func:`entries` takes the runs of the notebooks (those matching ``only``, a glob or
substring of their path, as ``adlib reproduce --only``) from :data:`adlib.bill.NOTEBOOKS`: the
jobs the notebooks ask the results store for, built by the same ``adlib.papers.*`` functions
with the same defaults (the bill before the run counts the same runs). A run that several
notebooks share is one entry. Datasets that are not under the data root are listed (the bill
fills them in from its facts) but not run.

**States** (:func:`state`): ``done`` (``record.json``), ``running`` (a live claim,
:mod:`adlib.claims`), ``failed`` (``failed.json``: the last failure's error and traceback,
written by the grid; removed when the run succeeds), ``to do``. The store's layout is the
notebooks' (:mod:`adlib.results`), so after a grid has run, the notebooks find every run and only
render.

**Bundles** (:func:`bundles`): runs that share an expensive prefix go to one task, in order, on
one worker: ADTR's adapted runs (``adapt_from="normal"``) start from the normal-only model, which
the normal-only run of the same settings trains; the model keeps finished normal-only stages in
its process (``adlib.models.adtr._NORMAL_STAGES``), so the bundle (normal-only run first) trains
that stage once. A method says which config fields do not belong to the prefix with its
``ADAPTATION_FIELDS``; the key is the rest of the resolved config with dataset, category and
profile (the seed is in the config). Every other run is a bundle of its own.

**Backends.**

- ``local`` (:func:`run_local`): worker processes (spawned, dying with the parent:
  :func:`adlib.results.worker_pool`'s rules), one per slot (:func:`slots`): ``--jobs N`` workers
  on the profile's device or ``--device``, or ``--gpus 0,1,2,3`` one worker per GPU
  (``--per-gpu K``: K per GPU, for small runs), each worker's runs on ``cuda:i``; ``--devices``
  takes any list of torch devices (``cpu:0,cpu:1`` exercises the assignment on a machine without
  a GPU). CPU threads: under the reference numerics a CPU run has one thread
  (:mod:`adlib.numerics`); a GPU worker gets ``cores // workers``. One slot runs in this process.
  Returns when every run is done or failed.
- ``slurm`` (:func:`submit`): a submitit job array, one task per bundle of the runs not done
  (and not running), with GPUs and CPUs per task, a time limit, partition, account, array
  parallelism, extra ``#SBATCH`` options, ``--requeue``, and submitit's logs per task
  (``<logs>/<job>_<task>_0_log.out|err``). The task (:class:`GridTask`) is checkpointable:
  when Slurm preempts it or its time runs out, submitit requeues it with the same bundle, and the
  requeued task resumes its runs from their epoch checkpoints in the store (it takes back the
  claims of its earlier life at once). ``adlib grid run --backend slurm`` exits once the array is
  submitted (``--wait`` waits for it). ``submitit-local`` runs the same tasks with submitit's
  local executor (subprocesses on this machine): the Slurm path without Slurm, as the tests do.

Rerunning ``adlib grid run`` resumes: finished runs are never redone (their record is read, not
recomputed), an interrupted run resumes from its last epoch checkpoint, a run that failed is
tried again (``--skip-failed`` leaves it), and a run another process holds is left to it.

Open choices: a failed run does not stop its bundle's other runs; the local backend runs bundles
in the notebooks' order (no cost model); Dask is not offered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import claims
from .io import atomic_write_json
from .results import RECORD, UNHASHED_FIELDS, Job, ResultsStore, _canonical, read_record, run_job

log = logging.getLogger(__name__)

FAILED = "failed.json"
STATES = ("done", "running", "failed", "to do")
BACKENDS = ("local", "slurm", "submitit-local")


# ----------------------------------------------------------------------------------------------
# Which runs, and where they stand


@dataclass(frozen=True)
class Entry:
    """One run of the grid: its job, the notebooks that ask for it (in ``adlib reproduce``'s
    order), and whether its dataset is under the data root (else it is listed, not run)."""

    job: Job
    notebooks: tuple[str, ...]
    on_disk: bool = True


def entries(profile: str = "smoke", only: str | None = None, data_root=None, limit: int | None = None) -> list[Entry]:
    """The runs of the notebooks matching ``only`` (all by default) in ``profile``, each once, in
    the notebooks' order; ``limit``: the first N."""
    from .bill import NOTEBOOKS, Context, _notebook_matches, run_id, unique_runs
    from .profiles import get_profile

    get_profile(profile)
    notebooks = [nb for nb in NOTEBOOKS if _notebook_matches(nb, only)]
    if not notebooks:
        raise ValueError(f"--only {only!r} matches no notebook; known: {', '.join(NOTEBOOKS)}")
    found: dict[tuple, list] = {}
    for nb in notebooks:
        ctx = Context(profile, data_root)
        for job in unique_runs(NOTEBOOKS[nb](ctx).jobs):
            on_disk = ctx.on_disk(job.dataset) and job.dataset not in ctx.missing
            item = found.setdefault(run_id(job), [job, [], on_disk])
            item[1].append(nb)
    out = [Entry(job, tuple(nbs), on_disk) for job, nbs, on_disk in found.values()]
    if limit is not None:
        if limit < 0:
            raise ValueError(f"--limit must be >= 0, got {limit}")
        out = out[:limit]
    return out


def read_failure(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``failed.json`` (None when there is none or it cannot be read)."""
    try:
        rec = json.loads((Path(run_dir) / FAILED).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def state(store: ResultsStore, job: Job) -> tuple[str, str]:
    """``(state, detail)`` of ``job`` in ``store``: one of :data:`STATES`, and who holds a running
    run or a failed run's error."""
    run_dir = store.run_dir(job)
    if read_record(run_dir / RECORD) is not None:
        return "done", ""
    holder = claims.live_holder(run_dir)
    if holder is not None:
        return "running", claims.describe(holder)
    failure = read_failure(run_dir)
    if failure is not None:
        return "failed", str(failure.get("error", "?"))
    return "to do", ""


def table(store: ResultsStore, items: Sequence[Entry]) -> pd.DataFrame:
    """One row per entry: notebook (the first that asks for it; ``+N`` more), label, dataset,
    category, seed, options (overrides and protocol beyond the variant), state, detail, run folder."""
    rows = []
    for e in items:
        st, detail = state(store, e.job)
        if st == "to do" and not e.on_disk:
            detail = f"no data: {e.job.dataset} is not under the data root (not run)"
        extra = ",".join(f"{k}={v}" for k, v in e.job.overrides + e.job.protocol if k != "variant")
        nb = e.notebooks[0] + (f" +{len(e.notebooks) - 1}" if len(e.notebooks) > 1 else "")
        rows.append(
            {
                "notebook": nb,
                "label": e.job.label,
                "dataset": e.job.dataset,
                "category": e.job.category,
                "seed": e.job.seed,
                "options": extra,
                "state": st,
                "detail": detail,
                "run_dir": str(store.run_dir(e.job)),
            }
        )
    cols = ["notebook", "label", "dataset", "category", "seed", "options", "state", "detail", "run_dir"]
    return pd.DataFrame(rows, columns=cols)


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """Runs per state (every state of :data:`STATES`, zeros included) and ``total``."""
    out = {s: int((frame["state"] == s).sum()) for s in STATES}
    out["total"] = len(frame)
    return out


# ----------------------------------------------------------------------------------------------
# Bundles: runs sharing an expensive prefix go together


def prefix_key(job: Job) -> tuple | None:
    """What the expensive prefix of ``job`` depends on, when its method shares one between runs
    (a method with ``ADAPTATION_FIELDS``: ADTR), else None. ADTR: a normal-only run, or an adapted
    run that starts from the normal-only model (``adapt_from="normal"``)."""
    from .models.base import MODELS, _load_all

    _load_all()
    fields = getattr(MODELS.get(job.method), "ADAPTATION_FIELDS", None)
    if not fields:
        return None
    cfg = job.config()
    if cfg.get("variant") != "normal" and cfg.get("adapt_from") != "normal":
        return None
    shared = {k: v for k, v in cfg.items() if k not in fields and k not in UNHASHED_FIELDS}
    text = json.dumps(_canonical(shared), sort_keys=True, default=str)
    return (job.method, job.dataset, job.category, job.profile, text)


def bundles(jobs: Iterable[Job]) -> list[list[Job]]:
    """``jobs`` in bundles (order of first appearance): those with one :func:`prefix_key` together,
    the run that trains only the prefix (ADTR's normal-only) first; every other job alone."""
    groups: dict[Any, list[Job]] = {}
    for i, job in enumerate(dict.fromkeys(jobs)):
        key = prefix_key(job)
        groups.setdefault(("prefix", key) if key is not None else ("alone", i), []).append(job)
    return [sorted(g, key=lambda j: j.config().get("variant") != "normal") for g in groups.values()]


# ----------------------------------------------------------------------------------------------
# Running one run, one bundle


def _failure_record(job: Job, error: str, tb: str) -> dict[str, Any]:
    return {
        "job": str(job),
        "key": job.key(),
        "error": error,
        "traceback": tb,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "task": claims.slurm_task(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_one(job: Job, store_root: str | os.PathLike, data_root=None, device: str | None = None) -> dict[str, Any]:
    """Run ``job`` into the store at ``store_root`` unless finished or held by another process.

    Returns an outcome: ``status`` ``cached`` (finished before), ``done``, ``failed`` (its
    ``failed.json`` written: error and traceback) or ``skipped`` (claimed by a live process), with
    the job, its run folder, the device, this process's id and host, and the seconds taken."""
    store = ResultsStore(Path(store_root), progress=False)
    run_dir = store.run_dir(job)
    out = {"job": str(job), "run_dir": str(run_dir), "device": device, "pid": os.getpid()}
    out["host"] = socket.gethostname()
    if read_record(run_dir / RECORD) is not None:
        return {**out, "status": "cached", "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        run_job(job, run_dir, data_root=data_root, device=device, progress=False, wait=False)
    except claims.Claimed as exc:
        log.info("%s: left to its holder (%s)", job, claims.describe(exc.holder))
        return {**out, "status": "skipped", "error": str(exc), "seconds": 0.0}
    except Exception as exc:  # noqa: BLE001 - recorded in failed.json and reported with the job
        tb = traceback.format_exc()
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        atomic_write_json(run_dir / FAILED, _failure_record(job, error, tb))
        log.error("run failed: %s\n%s", job, tb)
        return {**out, "status": "failed", "error": error, "seconds": round(time.perf_counter() - t0, 3)}
    (run_dir / FAILED).unlink(missing_ok=True)
    return {**out, "status": "done", "seconds": round(time.perf_counter() - t0, 3)}


def run_bundle(bundle: Sequence[Job], store_root, data_root=None, device: str | None = None) -> list[dict[str, Any]]:
    """The runs of one bundle, in order, in this process (so ADTR's normal-only stage is shared)."""
    return [run_one(job, store_root, data_root, device) for job in bundle]


# ----------------------------------------------------------------------------------------------
# The local backend: a worker pool with a device list


@dataclass(frozen=True)
class Slot:
    """One worker of the local backend: its index, torch device (None: the profile's) and threads."""

    index: int
    device: str | None
    threads: int


def parse_gpus(text: str) -> list[str]:
    """``"0,1,3"`` -> ``["cuda:0", "cuda:1", "cuda:3"]``."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items or not all(t.isdigit() for t in items):
        raise ValueError(f"--gpus {text!r}: expected GPU indices separated by commas, e.g. 0,1,2,3")
    if len(set(items)) != len(items):
        raise ValueError(f"--gpus {text!r}: a GPU is listed twice (use --per-gpu for several workers per GPU)")
    return [f"cuda:{t}" for t in items]


def slots(
    workers: int = 1,
    devices: Sequence[str] | None = None,
    per_device: int = 1,
    device: str | None = None,
    cpus: int | None = None,
) -> list[Slot]:
    """The local backend's workers: ``per_device`` per entry of ``devices`` (listed devices in
    turn: ``0,0,1,1`` for two GPUs, two each), else ``workers`` on ``device``. Threads: under the
    reference numerics one per CPU worker (:func:`adlib.numerics.run_threads`); a GPU worker, or
    any under ``native``, gets ``cpus // workers`` (``cpus``: this machine's cores)."""
    from . import numerics

    if per_device < 1 or workers < 1:
        raise ValueError(f"--jobs and --per-gpu must be >= 1, got {workers} and {per_device}")
    listed = [d for d in devices for _ in range(per_device)] if devices else [device] * workers
    cpus = cpus or os.cpu_count() or 1
    share = max(1, cpus // len(listed))
    out = []
    for i, dev in enumerate(listed):
        on_cpu = dev is None or str(dev).startswith("cpu")
        threads = min(share, numerics.run_threads(len(listed))) if on_cpu else share
        out.append(Slot(i, dev, threads))
    return out


_SLOT: Slot | None = None


def _init_worker(parent: int, queue, level: int = logging.WARNING) -> None:
    """Pool initializer: die with the parent, take this worker's slot, set its torch threads, log
    at the parent's level (a resumed run says so)."""
    global _SLOT
    from .results import _die_with_parent

    _die_with_parent(parent)
    _SLOT = queue.get()
    import torch

    torch.set_num_threads(_SLOT.threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _pool_bundle(bundle: list[Job], store_root: str, data_root) -> list[dict[str, Any]]:
    assert _SLOT is not None, "worker without a slot"
    outs = run_bundle(bundle, store_root, data_root, _SLOT.device)
    return [{**o, "slot": _SLOT.index, "threads": _SLOT.threads} for o in outs]


def run_local(
    store: ResultsStore, work: Sequence[Sequence[Job]], worker_slots: Sequence[Slot], progress: bool = True
) -> list[dict[str, Any]]:
    """Run the bundles ``work`` on ``worker_slots`` (one worker process per slot; one slot runs in
    this process) and return the outcomes of their runs (:func:`run_one`, with ``slot`` and
    ``threads``)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    work = [list(b) for b in work if b]
    n_runs = sum(len(b) for b in work)
    outcomes: list[dict[str, Any]] = []
    bar = tqdm(total=n_runs, desc="grid runs", disable=not progress or not n_runs)

    def collect(outs: list[dict[str, Any]]) -> None:
        for o in outs:
            (log.error if o["status"] == "failed" else log.info)("%s: %s", o["status"], o["job"])
            outcomes.append(o)
            bar.update(1)

    if len(worker_slots) == 1 or len(work) <= 1:
        from .results import _torch_threads

        slot = worker_slots[0]
        with _torch_threads(slot.threads):
            for b in work:
                outs = run_bundle(b, str(store.root), store.data_root, slot.device)
                collect([{**o, "slot": slot.index, "threads": slot.threads} for o in outs])
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for s in worker_slots:
            queue.put(s)
        with ProcessPoolExecutor(
            max_workers=len(worker_slots),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(os.getpid(), queue, logging.getLogger().getEffectiveLevel()),
        ) as ex:
            futs = {ex.submit(_pool_bundle, b, str(store.root), store.data_root): b for b in work}
            for fut in as_completed(futs):
                try:
                    collect(fut.result())
                except Exception as exc:  # noqa: BLE001 - a worker died (killed, out of memory): its runs said
                    err = f"worker died: {type(exc).__name__}: {' '.join(str(exc).split())}"
                    collect(
                        [
                            {"job": str(j), "status": "failed", "error": err, "run_dir": "", "seconds": 0.0}
                            for j in futs[fut]
                        ]
                    )
    bar.close()
    return outcomes


# ----------------------------------------------------------------------------------------------
# The Slurm backend (submitit)


@dataclass
class GridTask:
    """One submitit task: a bundle of runs into the store at ``store_root`` (see :func:`run_bundle`).

    Checkpointable (submitit calls :meth:`checkpoint` when Slurm preempts the task or its time
    runs out): it is requeued with the same bundle and resumes its runs from their checkpoints."""

    store_root: str
    data_root: str | None = None
    device: str | None = None

    def __call__(self, bundle: list[Job]) -> list[dict[str, Any]]:
        import torch

        from . import numerics

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0) or os.cpu_count() or 1
        on_cpu = self.device is not None and str(self.device).startswith("cpu")
        torch.set_num_threads(numerics.run_threads(1) if on_cpu else cpus)
        log.info("grid task %s on %s: %d run(s)", claims.slurm_task() or os.getpid(), socket.gethostname(), len(bundle))
        return run_bundle(bundle, self.store_root, self.data_root, self.device)

    def checkpoint(self, bundle: list[Job]):
        """Requeue with the same bundle (the store holds the progress: records and checkpoints)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, bundle)


@dataclass
class SlurmOptions:
    """What each task of the array asks Slurm for (``adlib grid run --backend slurm`` options)."""

    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    timeout_min: int = 24 * 60
    partition: str | None = None
    account: str | None = None
    array_parallelism: int | None = None
    mem_gb: float | None = None
    #: more ``#SBATCH`` options (``--slurm-option KEY=VALUE``, e.g. ``qos=high``, ``constraint=a100``)
    extra: dict[str, Any] = field(default_factory=dict)
    job_name: str = "adlib-grid"


def executor(folder: str | os.PathLike, cluster: str = "slurm", options: SlurmOptions | None = None):
    """A submitit executor for the grid's tasks (``cluster``: ``slurm``, ``local`` or ``debug``);
    ``folder`` holds submitit's files and the logs of every task."""
    try:
        import submitit
    except ImportError as exc:  # pragma: no cover - the cluster extra is not installed
        raise RuntimeError("the Slurm backend needs submitit: pip install 'adlib[cluster]'") from exc
    o = options or SlurmOptions()
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"name": o.job_name, "timeout_min": int(o.timeout_min)}
    if o.gpus_per_task:
        params["gpus_per_node"] = int(o.gpus_per_task)
    if o.cpus_per_task:
        params["cpus_per_task"] = int(o.cpus_per_task)
    if o.mem_gb:
        params["mem_gb"] = float(o.mem_gb)
    slurm: dict[str, Any] = {"slurm_additional_parameters": {"requeue": True, **o.extra}}
    if o.partition:
        slurm["slurm_partition"] = o.partition
    if o.account:
        slurm["slurm_account"] = o.account
    if o.array_parallelism:
        slurm["slurm_array_parallelism"] = int(o.array_parallelism)
    ex.update_parameters(**params, **slurm)
    return ex


def submit(
    store: ResultsStore,
    work: Sequence[Sequence[Job]],
    folder: str | os.PathLike,
    cluster: str = "slurm",
    options: SlurmOptions | None = None,
    device: str | None = None,
) -> list:
    """Submit one task per bundle of ``work`` (a job array) and return submitit's jobs."""
    work = [list(b) for b in work if b]
    if not work:
        return []
    ex = executor(folder, cluster, options)
    task = GridTask(str(store.root), str(store.data_root) if store.data_root else None, device)
    jobs = ex.map_array(task, work)
    log.info("submitted %d task(s) (%d runs) to %s: %s", len(jobs), sum(map(len, work)), cluster, jobs[0].job_id)
    return jobs


def pending(store: ResultsStore, items: Sequence[Entry], skip_failed: bool = False) -> tuple[list[Job], list[Entry]]:
    """The jobs to run now (not done, not running, on disk; failed ones unless ``skip_failed``) and
    the entries left out because their data is missing."""
    todo, no_data = [], []
    for e in items:
        st, _ = state(store, e.job)
        if st in ("done", "running") or (st == "failed" and skip_failed):
            continue
        if not e.on_disk:
            no_data.append(e)
            continue
        todo.append(e.job)
    return todo, no_data


def gather(jobs: Sequence) -> list[dict[str, Any]]:
    """The outcomes of submitted tasks, waiting for them; a task that died is one ``failed`` outcome."""
    out: list[dict[str, Any]] = []
    for j in jobs:
        try:
            out += j.result()
        except Exception as exc:  # noqa: BLE001 - a killed or crashed task: said, the others still read
            err = " ".join(str(exc).split())[:500]
            out.append({"job": f"task {j.job_id}", "status": "failed", "error": err, "run_dir": "", "seconds": 0.0})
    return out


__all__ = [
    "FAILED",
    "STATES",
    "Entry",
    "entries",
    "state",
    "table",
    "counts",
    "prefix_key",
    "bundles",
    "run_one",
    "run_bundle",
    "Slot",
    "slots",
    "parse_gpus",
    "run_local",
    "GridTask",
    "SlurmOptions",
    "executor",
    "submit",
    "pending",
    "gather",
]
