"""Batch execution of the notebooks with papermill.

``run_notebooks(profile="smoke")`` executes every notebook under ``notebooks/`` (sorted by path, so
``00_*`` before ``01_*`` and folders in name order), passing ``profile``, ``data_root`` and
``device`` as papermill parameters. Executed copies go to ``runs/<profile>/`` mirroring the
notebook tree (or back into ``notebooks/`` with ``inplace=True``, which is how the committed
smoke-profile outputs that nbval checks are refreshed). Figures are written by the notebooks
themselves to ``figures/``.

Each executed notebook is also rendered to HTML (nbconvert) under ``runs/<profile>/html/``, so the
results can be browsed without a kernel.

``parallel=N`` (``adlib reproduce --parallel N``) executes N notebooks at a time, longest first;
the runs they share are trained once (the results store locks each run) and the numbers are the
same as in a sequential batch.

A failing notebook does not stop the others: the summary names each failure with its cell.
An executed copy is written to a temporary name and moved into place only on success, so an
interrupted batch never leaves a half-written notebook where a good one was.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import repo_root
from .profiles import get_profile

log = logging.getLogger(__name__)


@dataclass
class NotebookResult:
    notebook: str
    ok: bool
    seconds: float
    output: str
    error: str = ""


@dataclass
class BatchResult:
    results: list[NotebookResult] = field(default_factory=list)

    @property
    def failed(self) -> list[NotebookResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        lines = [
            f"{'ok ' if r.ok else 'FAIL'} {r.seconds:7.1f}s  {r.notebook}" + (f"\n      {r.error}" if r.error else "")
            for r in self.results
        ]
        total = sum(r.seconds for r in self.results)
        lines.append(f"{len(self.results) - len(self.failed)} passed, {len(self.failed)} failed in {total:.1f}s")
        return "\n".join(lines)


def discover(notebooks_dir: Path | None = None, only: str | None = None) -> list[Path]:
    """Notebooks in execution order; ``only`` is a glob matched against the relative path. What an
    interrupted or failed run leaves beside a notebook (``.<name>.partial.ipynb``,
    ``<name>.failed.ipynb``) and JupyterLab's checkpoints are not notebooks to run."""
    base = Path(notebooks_dir or repo_root() / "notebooks")
    nbs = sorted(
        p
        for p in base.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and not p.name.startswith(".") and not p.name.endswith(".failed.ipynb")
    )
    if only:
        nbs = [p for p in nbs if fnmatch.fnmatch(str(p.relative_to(base)), only) or only in str(p.relative_to(base))]
    return nbs


def _failing_cell(exc: Exception) -> str:
    # papermill's PapermillExecutionError carries the cell index and the error name/value.
    idx = getattr(exc, "cell_index", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell {idx}" if idx is not None else "before execution"
    return f"{where}: {ename}: {str(evalue).splitlines()[0] if evalue else ''}"


def strip_machine_paths(path: str | os.PathLike, root: str | os.PathLike | None = None) -> int:
    """Rewrite an executed notebook so that it names no path of this machine: ``<root>/`` becomes
    relative in papermill's metadata and in every cell's outputs (warnings, log lines). nbval's
    sanitizer (``.ci/nbval-sanitize.cfg``) maps the absolute form of a fresh execution and the
    relative form committed to the same text, so checked cells still compare. Returns the number of
    strings changed."""
    import json

    prefix = str(Path(root or repo_root()).resolve()) + "/"
    nb = json.loads(Path(path).read_text())
    changed = 0

    def fix(obj):
        nonlocal changed
        if isinstance(obj, str):
            if prefix in obj:
                changed += 1
                return obj.replace(prefix, "")
            return obj
        if isinstance(obj, list):
            return [fix(v) for v in obj]
        if isinstance(obj, dict):
            return {k: fix(v) for k, v in obj.items()}
        return obj

    nb["metadata"] = fix(nb.get("metadata", {}))
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = fix(cell["outputs"])
    if changed:
        tmp = Path(path).with_name(f".{Path(path).name}.strip.tmp")
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return changed


def expected_seconds(nb: Path) -> float:
    """How long a notebook took when its committed outputs were made (papermill's ``duration``
    in the notebook's metadata; 0 when unknown): the order of a parallel batch."""
    try:
        meta = json.loads(Path(nb).read_text()).get("metadata", {})
        return float(meta.get("papermill", {}).get("duration") or 0.0)
    except (OSError, ValueError, TypeError):
        return 0.0


def write_html(notebook: str | os.PathLike, html: str | os.PathLike) -> Path:
    """An HTML rendering of an executed notebook (nbconvert's HTML exporter), written atomically:
    the results can be read in a browser without a kernel."""
    from nbconvert import HTMLExporter

    from .io import atomic_write_text

    body, _ = HTMLExporter().from_filename(str(notebook))
    return atomic_write_text(html, body)


def _execute(
    nb: str,
    dest: str,
    params: dict,
    timeout: int | None,
    log_output: bool,
    html: str | None = None,
    stamp: str | None = None,
) -> tuple[bool, float, str]:
    """Execute one notebook to ``dest`` (through a temporary name) and, if ``html`` is given, render
    it there; ``stamp``: a rehearsal's note (:func:`adlib.rehearsal.stamp_notebook`) put at the top
    of the executed copy; ``(ok, seconds, error)``."""
    import papermill as pm

    nb_path, dest_path = Path(nb), Path(dest)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_path.with_name(f".{dest_path.stem}.partial.ipynb")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb_path),
            str(tmp),
            parameters=params,
            cwd=str(nb_path.parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
            log_output=log_output,
        )
        if stamp is not None:
            from .rehearsal import stamp_notebook

            stamp_notebook(tmp, stamp)
        os.replace(tmp, dest_path)
        strip_machine_paths(dest_path)
        if html:
            write_html(dest_path, html)
        return True, time.perf_counter() - t0, ""
    except Exception as exc:  # noqa: BLE001 - reported by the caller, the others go on
        failed = dest_path.with_name(f"{dest_path.stem}.failed.ipynb")
        if tmp.exists():
            os.replace(tmp, failed)
        return False, time.perf_counter() - t0, _failing_cell(exc)


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """``os.environ.update(values)`` for the block; restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_notebooks(
    profile: str = "smoke",
    data_root: str | None = None,
    device: str | None = None,
    only: str | None = None,
    out_dir: str | os.PathLike | None = None,
    inplace: bool = False,
    notebooks_dir: str | os.PathLike | None = None,
    timeout: int | None = 1800,
    extra_parameters: dict | None = None,
    jobs: int | None = None,
    log_output: bool = False,
    parallel: int = 1,
    html: bool = True,
    html_dir: str | os.PathLike | None = None,
    stamp: str | None = None,
) -> BatchResult:
    """Execute the notebooks; see the module docstring.

    ``jobs``: worker processes for the training grids inside the notebooks (papermill parameter
    ``jobs``; None keeps each notebook's default, capped at ``cores // parallel`` when notebooks run
    side by side: ``$ADLIB_MAX_WORKERS``, :func:`adlib.results.capped_workers`). ``log_output``: stream the notebooks' output
    (progress bars, run logs) to this process's log. ``parallel``: notebooks executed at the same
    time (each in its own process and kernel), longest first (:func:`expected_seconds`); runs two
    notebooks share are trained once (the results store locks each run). The numbers do not
    depend on it: every run is seeded on its own and, under the reference numerics, uses one
    thread wherever it executes. The summary lists the notebooks in path order either way.
    ``html``: also write an HTML rendering of each executed notebook (:func:`write_html`) to
    ``runs/<profile>/html/<notebook>.html`` (under ``out_dir`` when given, or ``html_dir``).
    ``stamp``: a note put at the top of every executed copy (a rehearsal's,
    :func:`adlib.rehearsal.stamp_notebook`).
    """
    get_profile(profile)  # validate early
    try:
        import papermill  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "executing the notebooks needs papermill, part of the notebook extras: pip install -e '.[notebooks]'"
        ) from exc
    if int(parallel) < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    base = Path(notebooks_dir or repo_root() / "notebooks")
    out_base = base if inplace else Path(out_dir or repo_root() / "runs" / profile)
    nbs = discover(base, only)
    if not nbs:
        raise FileNotFoundError(f"no notebooks matching {only!r} under {base}")
    params = {
        "profile": profile,
        "data_root": str(data_root) if data_root else None,
        "device": device or get_profile(profile).device,
    }
    if jobs is not None:
        if int(jobs) < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        params["jobs"] = int(jobs)
    params.update(extra_parameters or {})
    rels = {nb: nb.relative_to(base) for nb in nbs}
    html_base = Path(html_dir) if html_dir else Path(out_dir or repo_root() / "runs" / profile) / "html"

    def html_of(nb: Path) -> str | None:
        return str((html_base / rels[nb]).with_suffix(".html")) if html else None

    outcome: dict[Path, NotebookResult] = {}

    def record(nb: Path, ok: bool, seconds: float, error: str) -> None:
        rel = rels[nb]
        dest = out_base / rel
        if ok:
            outcome[nb] = NotebookResult(str(rel), True, seconds, str(dest))
            log.info("[%d/%d] %s done in %.0f s", len(outcome), len(nbs), rel, seconds)
        else:
            failed = dest.with_name(f"{dest.stem}.failed.ipynb")
            outcome[nb] = NotebookResult(str(rel), False, seconds, str(failed), error)
            log.error("%s failed at %s (partial output: %s)", rel, error, failed)

    if int(parallel) == 1 or len(nbs) == 1:
        for i, nb in enumerate(nbs, 1):
            log.info("[%d/%d] %s (profile=%s, %d left after it)", i, len(nbs), rels[nb], profile, len(nbs) - i)
            dest = str(out_base / rels[nb])
            record(nb, *_execute(str(nb), dest, params, timeout, log_output, html_of(nb), stamp))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from .results import side_by_side_env

        order = sorted(nbs, key=lambda nb: -expected_seconds(nb))
        log.info("executing %d notebooks, %d at a time, longest first (profile=%s)", len(nbs), parallel, profile)
        # N notebooks side by side share the cores: unless --jobs says otherwise, each notebook's
        # store gets cores // N workers (at 1 it trains in the kernel, with no worker processes to start),
        # and each kernel's thread pools cores // N threads
        with environ(side_by_side_env(parallel, cap_workers=jobs is None)):
            with ProcessPoolExecutor(max_workers=int(parallel), mp_context=mp.get_context("spawn")) as ex:
                futs = {
                    ex.submit(
                        _execute, str(nb), str(out_base / rels[nb]), params, timeout, log_output, html_of(nb), stamp
                    ): nb
                    for nb in order
                }
                for fut in as_completed(futs):
                    record(futs[fut], *fut.result())
    return BatchResult([outcome[nb] for nb in nbs])
