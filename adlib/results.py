"""The results store: one record per training/evaluation run, cached, resumable, parallel.

Every table of the companion is built from here, never typed by hand.

A run is a :class:`Job`: method, dataset, category, profile, seed and config overrides (variant
included). Its **key** is (method, variant, dataset, category, seed, profile, weights,
config hash), where ``weights`` names the backbone weights the config asks for
(:func:`weights_id`) and the config hash is the SHA-256 of the method's full resolved config
(profile defaults plus overrides; the data root is left out because it names a place, not a
setting). A job's training protocol (:mod:`adlib.protocols`, e.g. few-shot ``shots``), when
given, is part of the key and of the hash. Changing any setting makes a new key; rerunning a
finished key is a cache hit.

Layout under the store's root (default ``<repo>/runs/<profile>/results``)::

    <label>/<dataset>/<category>/s<seed>-<hash12>/
        record.json        # written last, atomically: the run is finished iff it exists
        train.json         # written when training finished (key, model info, train timing)
        model.pt           # the trained model (adlib.models.load)
        checkpoints/       # per-epoch checkpoint; a killed run resumes from it
        claim.json         # while a process runs it (adlib.claims); failed.json: adlib grid's last failure
        prediction.npz     # image scores, labels, defect types, paths (+ maps when small, + mask_known when some mask is unknown)
        thresholds.json    # thresholds the labelled test split gives (F1-max, target FPR; for analysis)
        threshold.json     # with the ``calibration`` protocol: the decision threshold from held-out
        calibration.json   #   normal training images, and their scores (adlib predict uses it)

The command line (``adlib train`` / ``adlib test``), the notebooks and batch runs share this
layout and :func:`run_job`: ``adlib train`` writes ``model.pt`` and ``train.json``, ``adlib test``
(or a notebook asking for the same job) predicts and writes the record without training again.

``record.json`` holds the key, the metrics of :func:`adlib.models.evaluate`, the model's
``info()`` (config, actual backbone weights, method-specific choices such as GLASS-j's),
timings (train and predict seconds, images per second), the environment (versions, device) and
the time it was written. A run whose model states a released evaluation protocol (GLASS and
SimpleNet with test-set selection, released masks or released PRO:
``model.evaluation_protocol``) records both protocols from one training: ``metrics`` is the
standard one (last epoch, nearest-neighbour masks, AU-PRO; ``prediction.npz`` is its prediction)
and ``metrics_released`` the released one (the test-selected epoch, labelled "test-set selection
(optimistic)", the released masks, ``pro_released``), with ``released_protocol`` saying which;
:func:`flatten` gives them as ``released_<metric>`` columns. Records are written atomically (temporary file + ``os.replace``):
a batch that is killed and restarted skips the runs it finished, resumes the one it was in from
its last epoch checkpoint, and loses nothing.

:meth:`ResultsStore.run_many` runs jobs in worker processes (``workers``), each with one torch
thread under the reference numerics (:mod:`adlib.numerics`; ``cpu_count // workers`` under
``ADLIB_NUMERICS=native``), so a job gives the same numbers whichever path ran it, shows a progress bar over runs, logs which run starts
and finishes, and reports every failed run at the end (the others still run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import numerics
from .io import atomic_write_json, file_lock
from .paths import repo_root

log = logging.getLogger(__name__)

RECORD = "record.json"
#: written when training finished (``adlib train``; the test then only predicts and evaluates)
TRAIN_RECORD = "train.json"
#: the quantile of a ``calibration`` run's stored normal-quantile thresholds
CALIBRATION_QUANTILE = 0.99
#: the thresholds the labelled test split gives, for analysis (:func:`_label_thresholds`)
LABEL_THRESHOLDS = "thresholds.json"
#: the false-positive rate of the test split's target-FPR threshold in ``thresholds.json``
TEST_TARGET_FPR = 0.05
#: fields of a config that name places or resources, not settings: left out of the hash
UNHASHED_FIELDS = ("data_root",)
#: config fields added after records were written, with the value that reproduces the former
#: behaviour: hashed only when set to something else, so the records written before still match
ADDED_FIELDS: dict[str, Any] = {
    "reweight_reduction": "sum",
    # PatchCore's opt-in scoring paths (issue 22), at the path every record was made with
    "nn_backend": "torch",
    "nn_candidates": 4,
    # GLASS / SimpleNet protocol options (issue 17), at the project's values (the smoke profile's)
    "select_every": None,
    "eval_masks": "nearest",
    "eval_pro": "standard",
    "resize_mode": "squash",
    "category_resize": "fixed",
    "texture_resize_mode": "squash",
    "samples_cap": "exact",
    "mss_weights_reading": "as-printed",  # POUTA: mss_weights (4, 0.3, 0.2, 0.1) were unnamed before
    # ADL (issue 17): the layout the smoke records were written with; the paper profile's released
    # defaults ("two_x2", no bias) are hashed
    "layer4_upsampling": "one_x4",
    "upsample_bias": True,
    # opt-in fast paths (adlib.fastpath, issue 22): the fp32 path is unhashed, so its keys are as before
    "fast": (),
}
#: maps are kept in prediction.npz (float16) when they take at most this many bytes
MAX_MAP_BYTES = 64 * 2**20
#: a cap on every store's worker processes, set by whoever runs several notebooks side by side
#: (``adlib reproduce --parallel N``, nbval under pytest-xdist): N notebooks x workers <= cores
ENV_MAX_WORKERS = "ADLIB_MAX_WORKERS"


def capped_workers(workers: int) -> int:
    """``workers`` limited by ``$ADLIB_MAX_WORKERS`` (when set), at least 1. At 1 a store runs its
    jobs in its own process (no worker processes to start); the numbers do not depend on it."""
    workers = max(1, int(workers))
    cap = os.environ.get(ENV_MAX_WORKERS, "").strip()
    if not cap:
        return workers
    if not cap.isdigit() or int(cap) < 1:
        raise ValueError(f"${ENV_MAX_WORKERS}={cap!r}: expected a positive integer")
    return min(workers, int(cap))


def cores_per_notebook(parallel: int) -> int:
    """The worker cap (:data:`ENV_MAX_WORKERS`) for ``parallel`` notebooks side by side: cores // N."""
    return max(1, (os.cpu_count() or 1) // max(1, int(parallel)))


#: the thread pools of a notebook's kernel outside torch's runs: OpenMP (torch before its first run,
#: scikit-learn's t-SNE), OpenBLAS and MKL (numpy, scipy). Left at the machine's core count, two
#: kernels side by side each start that many threads on the same cores, and OpenMP's spinning
#: threads then slow each other down (a t-SNE of 1,000 points on 2 cores with one of them busy:
#: 9.4 s with 2 threads, 4.4 s with 1; benchmarks/RESULTS.md).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def side_by_side_env(parallel: int, cap_workers: bool = True) -> dict[str, str]:
    """The environment for ``parallel`` notebooks run side by side (``adlib reproduce --parallel``,
    nbval under pytest-xdist), so that together they use each core once: every store's worker cap
    (:data:`ENV_MAX_WORKERS`, unless ``cap_workers`` is False) and every thread pool of
    :data:`THREAD_ENV` at cores // N. Variables the user has set are left as they are; empty for
    one notebook at a time. The numbers do not depend on it (a run's threads are set per run:
    :func:`adlib.numerics.configure_torch`)."""
    if int(parallel) <= 1:
        return {}
    n = str(cores_per_notebook(parallel))
    names = ((ENV_MAX_WORKERS,) if cap_workers else ()) + THREAD_ENV
    return {k: n for k in names if k not in os.environ}


#: where the stores of the profiles live instead of ``<repo>/runs`` (a shared filesystem on a
#: cluster: ``adlib grid run`` writes there and the notebooks read from there)
ENV_RUNS = "ADLIB_RUNS"


def default_root(profile: str = "smoke") -> Path:
    """``<repo>/runs/<profile>/results``, or ``$ADLIB_RUNS/<profile>/results`` when :data:`ENV_RUNS`
    is set (a rehearsal's: ``<repo>/runs/rehearsal/<profile>/results``, :mod:`adlib.rehearsal`)."""
    from . import rehearsal

    if rehearsal.active():
        return rehearsal.root() / profile / "results"
    runs = os.environ.get(ENV_RUNS, "").strip()
    return (Path(runs).expanduser() if runs else repo_root() / "runs") / profile / "results"


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (12 hex digits) of a config dict: sorted keys, tuples as lists, without
    :data:`UNHASHED_FIELDS` and without :data:`ADDED_FIELDS` at their former-behaviour value."""
    cfg = {
        k: v
        for k, v in config.items()
        if k not in UNHASHED_FIELDS and not (k in ADDED_FIELDS and _canonical(v) == _canonical(ADDED_FIELDS[k]))
    }
    text = json.dumps(_canonical(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def weights_id(config: dict[str, Any]) -> str:
    """Which backbone weights a config asks for, without loading them.

    ``timm:<tag>`` for pretrained timm weights, ``file:<name>`` for a weights file,
    ``random-init:<backbone> seed=<s>`` for a seeded random initialisation, ``none`` for a method
    without a pretrained backbone. The record also keeps the provenance the backbone reported
    when it was built (``model.backbone.weights``)."""
    backbone = config.get("backbone")
    if not backbone:
        return "none"
    if not config.get("pretrained", True):
        return f"random-init:{backbone} seed={config.get('backbone_seed', 0)}"
    if config.get("weights_file"):
        return f"file:{Path(str(config['weights_file'])).name}"
    from .backbones import BACKBONES

    return f"timm:{config.get('backbone_tag') or BACKBONES.get(backbone, backbone)}"


@dataclass(frozen=True)
class Job:
    """One run: train ``method`` on ``dataset/category`` (normal training images), test it."""

    method: str
    dataset: str
    category: str
    profile: str = "smoke"
    seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()
    #: training protocol (:mod:`adlib.protocols`, e.g. ``(("shots", 4),)``); empty = full-shot
    protocol: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(
        cls,
        method: str,
        dataset: str,
        category: str,
        profile: str = "smoke",
        seed: int = 0,
        protocol: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Job:
        """A job; ``method`` is a registry name (a method, or a variant such as ``glass-m``); list
        values become tuples (the job is hashable), ``None`` overrides are dropped.
        ``protocol``: how the training set is formed (:func:`adlib.protocols.check_protocol`)."""
        from .models.base import method_and_overrides
        from .protocols import check_protocol

        opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
        method, opts = method_and_overrides(method, opts)  # a variant's registry name, e.g. "glass-m"
        proto = check_protocol(protocol)
        return cls(
            method, dataset, category, profile, int(seed), tuple(sorted(opts.items())), tuple(sorted(proto.items()))
        )

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def variant(self) -> str | None:
        """The variant the config resolves to (GLASS's default ``m`` included), else None."""
        return self.config().get("variant")

    @property
    def label(self) -> str:
        return f"{self.method}-{self.variant}" if self.variant else self.method

    def config(self) -> dict[str, Any]:
        """The method's resolved config (profile defaults, overrides, this job's seed)."""
        from . import rehearsal

        fast_env = os.environ.get("ADLIB_FAST", "") if self.profile == "paper" else ""
        return dict(
            _resolved_config(self.method, self.profile, self.seed, self.overrides, rehearsal.active(), fast_env)
        )

    def key(self) -> dict[str, Any]:
        """The run's key. A non-empty protocol is part of it and of the hash (full-shot keys are
        those of jobs without a protocol)."""
        cfg = self.config()
        hashed = {**cfg, "protocol": dict(self.protocol)} if self.protocol else cfg
        key = {
            "method": self.method,
            "variant": cfg.get("variant"),
            "dataset": self.dataset,
            "category": self.category,
            "seed": self.seed,
            "profile": self.profile,
            "weights": weights_id(cfg),
            "config_hash": config_hash(hashed),
        }
        if self.protocol:
            key["protocol"] = dict(self.protocol)
        return key

    def __str__(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.overrides + self.protocol if k != "variant")  # noqa: E501
        return f"{self.label} {self.dataset}/{self.category} seed {self.seed}" + (f" [{extra}]" if extra else "")


@functools.lru_cache(maxsize=4096)
def _resolved_config(
    method: str, profile: str, seed: int, overrides: tuple, rehearsal: bool = False, fast_env: str = ""
) -> dict[str, Any]:
    # ``rehearsal`` and ``fast_env`` are part of the cache key only: for_profile reads them itself
    from .models.base import MODELS, _load_all

    _load_all()
    if method not in MODELS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(MODELS))}")
    cfg = MODELS[method].Config.for_profile(profile, **{**dict(overrides), "seed": seed})
    return dataclasses.asdict(cfg)


def environment(device: str | None = None) -> dict[str, Any]:
    """Versions, machine and device of a run, with the numerics in force (:func:`adlib.numerics.describe`)."""
    import torch

    from . import __version__

    return {
        "adlib": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _processor(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "device": str(device) if device is not None else "",
        "torch_threads": str(torch.get_num_threads()),
        "numerics": numerics.describe(device if device is not None else "cpu"),
    }


@functools.lru_cache(maxsize=1)
def _processor() -> str:
    """The CPU model name (``/proc/cpuinfo``), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class RunFailed(RuntimeError):
    """Some runs of a batch failed; ``failures`` maps each job to its error text."""

    def __init__(self, failures: dict[Job, str]):
        self.failures = failures
        lines = "\n".join(
            f"  - {job}: {err.strip().splitlines()[-1] if err.strip() else err}" for job, err in failures.items()
        )
        super().__init__(f"{len(failures)} run(s) failed:\n{lines}")


@dataclass
class ResultsStore:
    """Records of finished runs under ``root`` (see the module docstring for the layout)."""

    root: Path
    data_root: str | None = None
    device: str | None = None
    workers: int = 1
    progress: bool = True
    failures: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.workers = capped_workers(self.workers)

    @classmethod
    def for_profile(cls, profile: str = "smoke", root: str | os.PathLike | None = None, **kw: Any) -> ResultsStore:
        return cls(Path(root) if root else default_root(profile), **kw)

    # -- where and what ------------------------------------------------------------------------
    def run_dir(self, job: Job) -> Path:
        k = job.key()
        return self.root / job.label / job.dataset / job.category / f"s{job.seed}-{k['config_hash']}"

    def get(self, job: Job) -> dict[str, Any] | None:
        """The finished record of ``job``, or None."""
        return read_record(self.run_dir(job) / RECORD)

    def records(self) -> list[dict[str, Any]]:
        """Every finished record under the root (sorted by path)."""
        out = []
        for p in sorted(self.root.glob(f"*/*/*/*/{RECORD}")):
            rec = read_record(p)  # an invalid one is moved aside with a warning (recomputed when asked for)
            if rec is not None:
                out.append(rec)
        return out

    def frame(self, jobs: Iterable[Job] | None = None) -> pd.DataFrame:
        """One row per finished run (of ``jobs`` if given, else all): the key, metrics, timings."""
        recs = [r for r in (self.get(j) for j in jobs) if r] if jobs is not None else self.records()
        rows = [flatten(r) for r in recs]
        return pd.DataFrame(rows, columns=None if rows else list(FRAME_COLUMNS))

    def prediction(self, job: Job) -> dict[str, np.ndarray]:
        """The saved prediction of a finished job (``image_scores``, ``labels``, ``defect_types``,
        ``paths``, ``maps``/``masks`` when they were small enough to keep, and ``mask_known`` when some
        anomalous image had no mask)."""
        path = self.run_dir(job) / "prediction.npz"
        if not path.is_file():
            raise FileNotFoundError(f"no prediction for {job} at {path}: run it first")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def model(self, job: Job):
        """The trained model of a finished job."""
        from . import rehearsal
        from .models import load

        path = self.run_dir(job) / "model.pt"
        if not path.is_file() and rehearsal.active() and self.get(job) is not None:
            # a rehearsal drops the weights of finished runs (_drop_rehearsal_weights): train the
            # job again beside the run, load it and let the copy go
            with tempfile.TemporaryDirectory(dir=self.root, prefix=".rehearsal-model-") as tmp:
                with _torch_threads(numerics.run_threads(self.workers)):
                    train_job(job, Path(tmp), data_root=self.data_root, device=self.device, progress=False)
                return load(Path(tmp) / "model.pt")
        if not path.is_file():
            raise FileNotFoundError(f"no trained model for {job} at {path}: run it first")
        return load(path)

    # -- running ----------------------------------------------------------------------------------
    def run(self, job: Job) -> dict[str, Any]:
        """The record of ``job``: from the store if finished, else trained and tested now (in this
        process, with the torch threads a worker of :meth:`run_many` would have, so that the
        numbers do not depend on which path ran the job)."""
        rec = self.get(job)
        if rec is not None:
            return rec
        with _torch_threads(numerics.run_threads(self.workers)):
            return run_job(job, self.run_dir(job), data_root=self.data_root, device=self.device, progress=self.progress)

    def train(self, job: Job) -> dict[str, Any]:
        """Train ``job`` without testing it (``adlib train``): ``model.pt`` and ``train.json`` in its
        run folder; a later :meth:`run` or :meth:`test` of the same job reuses the training."""
        with _torch_threads(numerics.run_threads(self.workers)):
            return train_job(
                job, self.run_dir(job), data_root=self.data_root, device=self.device, progress=self.progress
            )

    def test(self, job: Job) -> dict[str, Any]:
        """The record of a job trained by :meth:`train` (``adlib test``): predicted and evaluated
        now unless finished."""
        with _torch_threads(numerics.run_threads(self.workers)):
            return test_job(
                job, self.run_dir(job), data_root=self.data_root, device=self.device, progress=self.progress
            )

    def run_many(
        self, jobs: Iterable[Job], *, workers: int | None = None, raise_on_failure: bool = True
    ) -> pd.DataFrame:
        """Run every job not yet finished (``workers`` processes) and return :meth:`frame` of all.

        Failures are collected in :attr:`failures` and, with ``raise_on_failure``, raised together
        as :class:`RunFailed` after all other jobs finished."""
        jobs = list(dict.fromkeys(jobs))
        todo = [j for j in jobs if self.get(j) is None]
        workers = capped_workers(workers or self.workers)
        log.info(
            "results store %s: %d run(s), %d cached, %d to run with %d worker(s)",
            self.root,
            len(jobs),
            len(jobs) - len(todo),
            len(todo),
            workers,
        )
        self.failures = {}
        bar = tqdm(total=len(todo), desc="runs", disable=not self.progress or not todo)
        threads = numerics.run_threads(workers)
        if workers == 1 or len(todo) <= 1:
            self._run_serially(todo, threads, bar)
        else:
            with worker_pool(workers) as ex:
                futs = {
                    ex.submit(_worker, job, str(self.run_dir(job)), self.data_root, self.device, threads): job
                    for job in todo
                }
                for fut in as_completed(futs):
                    job = futs[fut]
                    err = fut.result()
                    if err:
                        self.failures[job] = err
                        log.error("run failed: %s\n%s", job, err)
                    else:
                        log.info("run finished: %s", job)
                    bar.set_postfix_str(str(job))
                    bar.update(1)
        bar.close()
        if self.failures and raise_on_failure:
            raise RunFailed(self.failures)
        return self.frame(jobs)

    def _run_serially(self, todo: list[Job], threads: int | None, bar) -> None:
        """Run ``todo`` in this process, one after the other. A job that another process is running
        (a notebook beside this one that shares it) is put back, not waited for: the jobs nobody holds
        run first, then the put-back ones are waited for (their record is read when the other process
        finishes). The numbers do not depend on the order; the core is not left idle meanwhile."""
        from .claims import Claimed

        pending, wait, i = list(todo), False, 0
        while pending:
            held: list[Job] = []
            for job in pending:
                bar.set_postfix_str(str(job))
                try:
                    with _torch_threads(threads):
                        run_job(
                            job,
                            self.run_dir(job),
                            data_root=self.data_root,
                            device=self.device,
                            progress=False,
                            wait=wait,
                        )
                except Claimed as held_by:
                    log.info("run %s is being run by another process (%s): later", job, held_by)
                    held.append(job)
                    continue
                except Exception:  # noqa: BLE001 - reported with the job below
                    self.failures[job] = traceback.format_exc()
                    log.error("run failed: %s\n%s", job, self.failures[job])
                i += 1
                log.info("run %d/%d done: %s", i, len(todo), job)
                bar.update(1)
            pending, wait = held, True


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The results store's worker processes (spawned, so no state of the parent leaks in), each of
    which dies with the parent (:func:`_die_with_parent`): a batch killed with ``kill -9`` leaves no
    orphan training on; what finished is in the store, an interrupted run resumes from its checkpoint."""
    import multiprocessing as mp

    return ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_die_with_parent, initargs=(os.getpid(),)
    )


def _die_with_parent(parent: int) -> None:
    """Worker initializer: ask Linux to SIGKILL this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op. Exits at once if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker(job: Job, run_dir: str, data_root, device, threads: int) -> str | None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    try:
        run_job(job, Path(run_dir), data_root=data_root, device=device, progress=False)
        return None
    except Exception:  # noqa: BLE001 - sent back to the parent, which names the job
        return traceback.format_exc()


#: keys a record must hold to count as finished (``record.json``) / trained (``train.json``)
REQUIRED_KEYS = {RECORD: ("method", "config_hash", "metrics"), TRAIN_RECORD: ("method", "config_hash")}


def read_record(path: Path) -> dict[str, Any] | None:
    """A ``record.json`` / ``train.json`` that is complete and valid, else None: a file that is
    empty, truncated, not a JSON object, lacks the keys of :data:`REQUIRED_KEYS` or (for
    ``record.json``) holds no metric is moved aside to ``<name>.invalid`` with a warning naming it,
    so the run counts as unfinished and is recomputed."""
    path = Path(path)
    if not path.is_file():
        return None
    problem = None
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        rec, problem = None, f"is unreadable ({exc})"
    if problem is None:
        if not isinstance(rec, dict):
            problem = f"is not a JSON object ({type(rec).__name__})"
        else:
            missing = [k for k in REQUIRED_KEYS.get(path.name, ()) if k not in rec]
            if missing:
                problem = f"lacks {missing}"
            elif path.name == RECORD and not (isinstance(rec["metrics"], dict) and rec["metrics"]):
                problem = "holds no metrics"
    if problem is None:
        return rec
    aside = path.with_name(path.name + ".invalid")
    os.replace(path, aside)
    log.warning("results record %s %s: moved to %s, the run counts as unfinished", path, problem, aside.name)
    return None


def run_job(
    job: Job, run_dir: Path, *, data_root=None, device=None, progress: bool = True, wait: bool = True
) -> dict[str, Any]:
    """Train (resuming from ``run_dir/checkpoints``, or reusing a finished training), save,
    predict, evaluate and write the record: the one run pipeline of the CLI, the notebooks and
    batch runs.

    ``record.json`` is written last: until then the run counts as unfinished. Runs of one job
    never overlap (:func:`_job_lock`): a process that waited for another returns its record;
    with ``wait=False`` it raises :class:`adlib.claims.Claimed` instead of waiting."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _job_lock(run_dir, wait=wait):
        if (done := read_record(run_dir / RECORD)) is not None:  # another process finished it meanwhile
            return done
        if read_record(run_dir / TRAIN_RECORD) is not None:  # trained before (``adlib train``): test only
            return _test_locked(job, run_dir, data_root=data_root, device=device, progress=progress)
        trained = _train_locked(job, run_dir, data_root=data_root, device=device, progress=progress)
        rec = _test_locked(job, run_dir, data_root=data_root, device=device, progress=progress, trained=trained)
        _drop_rehearsal_weights(run_dir)
        return rec


def _drop_rehearsal_weights(run_dir: Path) -> None:
    """In a rehearsal of the paper profile (:mod:`adlib.rehearsal`) a finished run keeps its records
    and prediction, not its weights: hundreds of paper-size networks (DRAEM's 97 M parameters with
    their optimiser state are 1.2 GB) would fill a CI machine's disk. :meth:`ResultsStore.model`
    trains such a model again when a notebook asks for it."""
    from . import rehearsal

    if rehearsal.active():
        (Path(run_dir) / "model.pt").unlink(missing_ok=True)


def train_job(job: Job, run_dir: Path, *, data_root=None, device=None, progress: bool = True) -> dict[str, Any]:
    """Train ``job`` into ``run_dir`` (``model.pt`` and ``train.json``) without testing it
    (``adlib train``); a finished training or run is not repeated. Returns ``train.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _job_lock(run_dir):
        for name in (TRAIN_RECORD, RECORD):
            if (rec := read_record(run_dir / name)) is not None:
                log.info("%s: already trained (%s)", job, run_dir / name)
                return rec
        return _train_locked(job, run_dir, data_root=data_root, device=device, progress=progress).record


def test_job(job: Job, run_dir: Path, *, data_root=None, device=None, progress: bool = True) -> dict[str, Any]:
    """Test a job trained by :func:`train_job` (or return its finished record): predict the test
    split, evaluate, write ``prediction.npz`` and ``record.json``. ``FileNotFoundError`` names the
    ``adlib train`` command when it was not trained."""
    run_dir = Path(run_dir)
    if read_record(run_dir / RECORD) is None and read_record(run_dir / TRAIN_RECORD) is None:
        raise FileNotFoundError(
            f"no trained model for {job} in {run_dir}: train it first "
            f"(`adlib train {job.label} --dataset {job.dataset} --category {job.category}` with the same options)"
        )
    with _job_lock(run_dir):
        if (done := read_record(run_dir / RECORD)) is not None:
            return done
        return _test_locked(job, run_dir, data_root=data_root, device=device, progress=progress)


@contextlib.contextmanager
def _job_lock(run_dir: Path, wait: bool = True):
    """One process at a time per run directory: :func:`adlib.io.file_lock` on ``run_dir/.lock``
    (exact on one machine), then the run's claim file (:func:`adlib.claims.claim`, also across
    machines sharing the store, and what ``adlib grid list`` reports as running). Two notebooks
    executed side by side, or two batch runs sharing a store, that need the same job train it
    once; the second waits and reads the record. ``wait=False`` (``adlib grid``): raise
    :class:`adlib.claims.Claimed` at once when another process holds either."""
    import socket

    from .claims import Claimed, claim, read

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(run_dir / ".lock", blocking=wait))
        except BlockingIOError:
            holder = read(run_dir) or {"host": socket.gethostname(), "pid": "?", "started": time.time(), "age": 0.0}
            raise Claimed(run_dir, holder) from None
        stack.enter_context(claim(run_dir, wait=wait))
        yield


@dataclass
class _Trained:
    """A model just trained by :func:`_train_locked`, with what testing it needs."""

    model: Any
    test_ds: Any
    record: dict[str, Any]


def _job_transform(job: Job, model):
    """The transform of the job's images: a method may resize per category (GLASS's released
    wood/toothbrush 329: ``transform_for``), else its own ``transform``."""
    for_category = getattr(model, "transform_for", None)
    return for_category(job.dataset, job.category) if for_category is not None else model.transform


def _datasets(job: Job, model, data_root):
    """The job's training and test sets with its protocol applied (:mod:`adlib.protocols`; the draw
    depends on the seed only, so training and a later test see the same split)."""
    from .data import get_dataset
    from .protocols import apply_protocol, check_method_accepts

    check_method_accepts(dict(job.protocol), model)
    transform = _job_transform(job, model)
    train_ds = get_dataset(job.dataset, job.category, "train", root=data_root, transform=transform)
    test_ds = get_dataset(job.dataset, job.category, "test", root=data_root, transform=transform)
    return apply_protocol(dict(job.protocol), train_ds, test_ds, job.seed)


def _calibration_set(job: Job, model, data_root):
    """The held-out normal images of the job's ``calibration`` protocol (:mod:`adlib.protocols`),
    None without one."""
    from .data import get_dataset
    from .protocols import calibration_set

    if "calibration" not in dict(job.protocol):
        return None
    transform = _job_transform(job, model)
    train_ds = get_dataset(job.dataset, job.category, "train", root=data_root, transform=transform)
    return calibration_set(dict(job.protocol), train_ds, job.seed)


def _calibrate(model, calib_ds, run_dir: Path, dev, progress: bool) -> dict[str, Any]:
    """Score the held-out normal images of a ``calibration`` run and store its thresholds with the
    model: ``calibration.json`` (the files, their image scores, the image-level and pixel-level
    normal-quantile thresholds at :data:`CALIBRATION_QUANTILE`) and ``threshold.json`` (the
    image-level one, what ``adlib predict`` decides with). Returns the summary for ``train.json``."""
    from .predict import CALIBRATION_FILE, THRESHOLD_FILE
    from .thresholds import from_normal, from_normal_maps

    pred = model.predict(calib_ds, device=dev, progress=progress)
    q = CALIBRATION_QUANTILE
    image = from_normal(pred.image_scores, q)
    image = dataclasses.replace(image, params={**image.params, "source": "calibration hold-out"})
    pixel = from_normal_maps(pred.maps, q)
    pixel = dataclasses.replace(pixel, params={**pixel.params, "source": "calibration hold-out"})
    atomic_write_json(
        run_dir / CALIBRATION_FILE,
        {
            "files": list(pred.paths),
            "scores": [float(s) for s in pred.image_scores],
            "image": image.as_dict(),
            "pixel": pixel.as_dict(),
        },
    )
    atomic_write_json(run_dir / THRESHOLD_FILE, image.as_dict())
    log.info(
        "threshold %.6g (quantile %s of %d held-out normal image(s)) -> %s", image.value, q, len(pred.paths), run_dir
    )
    return {"images": len(pred.paths), "quantile": q, "image": image.value, "pixel": pixel.value}


def _label_thresholds(pred, run_dir: Path) -> None:
    """``thresholds.json``: the thresholds the labelled test split gives (image F1-max, the image
    threshold at :data:`TEST_TARGET_FPR`, pixel F1-max over the images with known masks), for
    analysis: chosen and judged on the same images, they are optimistic as a decision rule; the
    stored decision threshold (``threshold.json``) comes from normal images only. A split without
    anomalies, or with constant scores, leaves the entries it cannot give out (logged)."""
    from .thresholds import from_labels

    out: dict[str, Any] = {"source": "test split (optimistic: chosen and judged on the same images)"}
    labels = np.asarray(pred.labels)
    known = np.asarray(pred.mask_known, dtype=bool)
    tries = {
        "image_f1_max": lambda: from_labels(labels, pred.image_scores, "f1-max"),
        "image_target_fpr": lambda: from_labels(labels, pred.image_scores, "target-fpr", target_fpr=TEST_TARGET_FPR),
        "pixel_f1_max": lambda: from_labels(pred.masks[known], pred.maps[known], "f1-max", level="pixel"),
    }
    if labels.min() == labels.max():
        tries = {}
    for name, make in tries.items():
        try:
            out[name] = make().as_dict()
        except ValueError as exc:
            log.info("%s: no %s threshold (%s)", run_dir, name, exc)
    atomic_write_json(run_dir / LABEL_THRESHOLDS, out)


def _train_locked(job: Job, run_dir: Path, *, data_root=None, device=None, progress: bool = True) -> _Trained:
    from .models import build
    from .profiles import resolve_device

    dev = resolve_device(device, job.profile)
    numerics.configure_torch(dev)
    model = build(job.method, job.profile, **{**job.options, "seed": job.seed, "data_root": data_root})
    train_ds, test_ds, protocol = _datasets(job, model, data_root)
    # test-set model selection (GLASS's released protocol, select_best_on_test): the method says so
    fit_kw = {"test_ds": test_ds} if getattr(model, "fit_uses_test_set", False) else {}
    log.info("training %s (%d images) -> %s", job, len(train_ds), run_dir)
    t0 = time.perf_counter()
    model.fit(train_ds, device=dev, progress=progress, checkpoint_dir=run_dir / "checkpoints", **fit_kw)
    train_s = time.perf_counter() - t0
    model.save(run_dir / "model.pt")
    calib_ds = _calibration_set(job, model, data_root)
    calibration = _calibrate(model, calib_ds, run_dir, dev, progress) if calib_ds is not None else None
    record = {
        **job.key(),
        "label": job.label,
        "overrides": {k: v for k, v in job.overrides},
        "protocol_detail": protocol,
        "model": model.info(),
        "train_images": len(train_ds),
        "train_seconds": round(train_s, 3),
        **({"calibration": calibration} if calibration is not None else {}),
        "environment": environment(dev),
        "data_root": str(data_root) if data_root else None,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(run_dir / TRAIN_RECORD, record)
    # the resume checkpoint duplicates model.pt once training is recorded: only an interrupted
    # training needs it (the store would otherwise keep every trained network twice)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return _Trained(model, test_ds, json.loads(json.dumps(record, default=str)))


def _test_locked(
    job: Job, run_dir: Path, *, data_root=None, device=None, progress: bool = True, trained: _Trained | None = None
) -> dict[str, Any]:
    from .models import evaluate, load
    from .profiles import resolve_device

    dev = resolve_device(device, job.profile)
    numerics.configure_torch(dev)
    if trained is None:  # trained by another process (``adlib train``): read it back
        model = load(run_dir / "model.pt")
        train_rec = json.loads((run_dir / TRAIN_RECORD).read_text())
        _check_model_is_the_job(job, model, train_rec, run_dir)
        _, test_ds, _ = _datasets(job, model, data_root)
    else:
        model, test_ds, train_rec = trained.model, trained.test_ds, trained.record
    t0 = time.perf_counter()
    pred = model.predict(test_ds, device=dev, progress=progress)
    predict_s = time.perf_counter() - t0
    spec = model.evaluation_protocol(job.dataset) if hasattr(model, "evaluation_protocol") else None
    released: dict[str, Any] = {}
    if spec is None:
        metrics = evaluate(pred)
    else:  # both protocols from one training: standard (last epoch) and released (selected epoch)
        pred, metrics, released = _both_protocols(model, pred, test_ds, spec, dev)
    _save_prediction(run_dir / "prediction.npz", pred)
    _label_thresholds(pred, run_dir)
    record = {  # the training record (key, protocol, train timing) with the test's results
        **train_rec,
        "metrics": metrics,
        **released,
        "model": model.info(),
        "test_images": len(test_ds),
        "predict_seconds": round(predict_s, 3),
        "images_per_second": round(len(test_ds) / predict_s, 2) if predict_s > 0 else None,
        "environment": environment(dev),
        "data_root": str(data_root) if data_root else None,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(run_dir / RECORD, record)
    log.info("%s: %s", job, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return json.loads(json.dumps(record, default=str))


def _check_model_is_the_job(job: Job, model, train_rec: dict[str, Any], run_dir: Path) -> None:
    """Refuse to test a model that is not the run's (a checkpoint of another method or variant, or
    a run folder copied from another configuration): it would be evaluated and labelled wrongly."""
    want_variant = job.config().get("variant")
    got_variant = getattr(model.cfg, "variant", None)
    if model.name != job.method or want_variant != got_variant:
        got = model.name + (f" (variant {got_variant})" if got_variant else "")
        raise ValueError(
            f"{run_dir / 'model.pt'} holds a {got} model, but the run is {job.label}: it cannot be tested as "
            f"this run; delete {run_dir} and train it again"
        )
    if train_rec.get("config_hash") != job.key()["config_hash"] or train_rec.get("method") != job.method:
        raise ValueError(
            f"{run_dir / TRAIN_RECORD} belongs to {train_rec.get('method')!r} config {train_rec.get('config_hash')!r}, "
            f"not to {job} (config {job.key()['config_hash']}); delete {run_dir} and train it again"
        )


#: how the record names the two evaluation protocols of a run with ``evaluation_protocol``
STANDARD_PROTOCOL = "last epoch, nearest-neighbour masks, AU-PRO"


def _both_protocols(model, pred, test_ds, spec: dict[str, Any], device) -> tuple[Any, dict, dict]:
    """A run whose model states a released evaluation protocol (GLASS / SimpleNet,
    :meth:`~adlib.models.glass.GLASS.evaluation_protocol`): ``(standard prediction, standard
    metrics, record entries)``.

    Standard metrics (``record["metrics"]``): the last epoch's weights (predicted again when the
    model holds the test-selected epoch), masks resized by nearest neighbour, AU-PRO. Released
    metrics (``record["metrics_released"]``): the weights the model holds (the selected epoch with
    test-set selection), the same predicted maps scored against the masks of ``spec["masks"]``
    (:meth:`adlib.data.AnomalyDataset.masks`), plus ``pro_released``
    (:func:`adlib.metrics.pro_released`) when ``spec["pro"] == "released"``.
    ``record["released_protocol"]`` says what the released column is."""
    from dataclasses import replace as dc_replace

    from . import metrics as metrics_mod
    from .models import evaluate

    std_pred = pred
    if spec.get("selection") != "last epoch" and getattr(model, "last_state", None) is not None:
        with model.epoch_weights("last"):
            std_pred = model.predict(test_ds, device=device, progress=False)
    standard = evaluate(std_pred)
    masks = pred.masks if spec["masks"] == "nearest" else test_ds.masks(spec["masks"])
    rel_pred = dc_replace(pred, masks=masks)
    released = evaluate(rel_pred)
    # the images whose mask is known (all of them but anomalous ones shipped without a mask)
    known = np.asarray(pred.mask_known, dtype=bool) | (np.asarray(pred.labels) == 0)
    known_masks, known_maps = (masks, pred.maps) if known.all() else (np.asarray(masks)[known], pred.maps[known])
    if spec.get("pro") == "released" and np.asarray(known_masks).any():
        pro_released = getattr(metrics_mod, "pro_released", None)
        if pro_released is None:
            raise RuntimeError("eval_pro='released' needs adlib.metrics.pro_released (the released compute_pro)")
        released["pro_released"] = float(pro_released(known_masks, known_maps))
    detail = {**spec, "standard": STANDARD_PROTOCOL}
    return std_pred, standard, {"metrics_released": released, "released_protocol": detail}


def _save_prediction(path: Path, pred) -> None:
    arrays: dict[str, np.ndarray] = {
        "image_scores": np.asarray(pred.image_scores, dtype=np.float64),
        "labels": np.asarray(pred.labels, dtype=np.int64),
        "defect_types": np.asarray(pred.defect_types, dtype=str),
        "paths": np.asarray(pred.paths, dtype=str),
    }
    if not np.asarray(pred.mask_known).all():  # only when some mask is unknown: files unchanged otherwise
        arrays["mask_known"] = np.asarray(pred.mask_known, dtype=bool)
    if pred.maps.size * 2 + pred.masks.size <= MAX_MAP_BYTES:
        arrays["maps"] = pred.maps.astype(np.float16)
        arrays["masks"] = pred.masks.astype(bool)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


#: columns of :meth:`ResultsStore.frame` before the metrics
FRAME_COLUMNS = (
    "method",
    "variant",
    "label",
    "dataset",
    "category",
    "seed",
    "profile",
    "weights",
    "config_hash",
    "train_seconds",
    "predict_seconds",
    "images_per_second",
)


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A record as one flat row: key fields, metrics, timings, the method's own columns (its
    :meth:`~adlib.models.core.Method.table_fields`, e.g. GLASS's distribution and GLASS-j's
    choice), and the numerics signature (:func:`adlib.numerics.signature`; ``unrecorded`` for older
    records)."""
    row = {k: record.get(k) for k in FRAME_COLUMNS}
    for k, v in (record.get("protocol") or {}).items():
        row[k] = v
    row.update(record.get("metrics", {}))
    # the released protocol's metrics (GLASS / SimpleNet with evaluation_protocol), prefixed
    for k, v in (record.get("metrics_released") or {}).items():
        row[f"released_{k}"] = v
    if record.get("released_protocol"):
        rp = record["released_protocol"]
        row["released_protocol"] = f"{rp.get('selection')}; masks {rp.get('masks')}; PRO {rp.get('pro')}"
        row["selected_epoch"] = rp.get("selected_epoch")
    model = record.get("model", {})
    row.update(_table_fields(record.get("method"), model))
    bb = model.get("backbone") if isinstance(model.get("backbone"), dict) else None
    if bb:
        row["backbone_weights"] = bb.get("weights")
    row["numerics"] = numerics.signature((record.get("environment") or {}).get("numerics"))
    return row


def _table_fields(method: str | None, info: dict[str, Any]) -> dict[str, Any]:
    """The method's own table columns from a record's model info (none for an unknown method)."""
    from .models.base import MODELS, _load_all

    _load_all()
    cls = MODELS.get(method or "")
    return cls.table_fields(info) if cls is not None else {}


def summarize(
    frame: pd.DataFrame,
    by: tuple[str, ...] = ("label", "dataset", "category"),
    metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc", "au_pro"),
) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metrics`` per ``by`` group (``n`` seeds)."""
    present = [m for m in metrics if m in frame.columns]
    g = frame.groupby(list(by), sort=False)
    out = g[present].mean()
    if len(frame) and g.size().max() > 1:
        sd = g[present].std(ddof=0).add_suffix("_sd")
        out = out.join(sd)
    out["n"] = g.size()
    return out.reset_index()


__all__ = [
    "Job",
    "ResultsStore",
    "RunFailed",
    "config_hash",
    "weights_id",
    "run_job",
    "capped_workers",
    "cores_per_notebook",
    "side_by_side_env",
    "THREAD_ENV",
    "train_job",
    "test_job",
    "flatten",
    "summarize",
    "default_root",
]
