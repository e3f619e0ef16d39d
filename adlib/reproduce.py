"""Batch execution of the notebooks with papermill.

``run_notebooks(profile="smoke")`` executes every notebook under ``notebooks/`` (sorted by path, so
``00_*`` before ``01_*`` and folders in name order), passing ``profile``, ``data_root`` and
``device`` as papermill parameters. Executed copies go to ``runs/<profile>/`` mirroring the
notebook tree (or back into ``notebooks/`` with ``inplace=True``, which is how the committed
smoke-profile outputs that nbval checks are refreshed). Figures are written by the notebooks
themselves to ``figures/``.

A failing notebook does not stop the others: the summary names each failure with its cell.
An executed copy is written to a temporary name and moved into place only on success, so an
interrupted batch never leaves a half-written notebook where a good one was.
"""

from __future__ import annotations

import fnmatch
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
        lines = [f"{'ok ' if r.ok else 'FAIL'} {r.seconds:7.1f}s  {r.notebook}" + (f"\n      {r.error}" if r.error else "") for r in self.results]
        total = sum(r.seconds for r in self.results)
        lines.append(f"{len(self.results) - len(self.failed)} passed, {len(self.failed)} failed in {total:.1f}s")
        return "\n".join(lines)


def discover(notebooks_dir: Path | None = None, only: str | None = None) -> list[Path]:
    """Notebooks in execution order; ``only`` is a glob matched against the relative path."""
    base = Path(notebooks_dir or repo_root() / "notebooks")
    nbs = sorted(p for p in base.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
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
    relative in papermill's metadata and in the outputs of cells that nbval does not check (warnings,
    log lines); checked cells (``nbval-check-output``) are left as executed, since nbval compares them
    with its own sanitizer. Returns the number of strings changed."""
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
        if "nbval-check-output" not in cell.get("metadata", {}).get("tags", []) and "outputs" in cell:
            cell["outputs"] = fix(cell["outputs"])
    if changed:
        tmp = Path(path).with_name(f".{Path(path).name}.strip.tmp")
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return changed


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
) -> BatchResult:
    """Execute the notebooks in order; see the module docstring.

    ``jobs``: worker processes for the training grids inside the notebooks (papermill parameter
    ``jobs``; None keeps each notebook's default). ``log_output``: stream the notebooks' output
    (progress bars, run logs) to this process's log.
    """
    import papermill as pm

    get_profile(profile)  # validate early
    base = Path(notebooks_dir or repo_root() / "notebooks")
    out_base = base if inplace else Path(out_dir or repo_root() / "runs" / profile)
    nbs = discover(base, only)
    if not nbs:
        raise FileNotFoundError(f"no notebooks matching {only!r} under {base}")
    params = {"profile": profile, "data_root": str(data_root) if data_root else None, "device": device or get_profile(profile).device}
    if jobs is not None:
        if int(jobs) < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        params["jobs"] = int(jobs)
    params.update(extra_parameters or {})
    batch = BatchResult()
    for i, nb in enumerate(nbs, 1):
        rel = nb.relative_to(base)
        dest = out_base / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.stem}.partial.ipynb")
        log.info("[%d/%d] %s (profile=%s, %d left after it)", i, len(nbs), rel, profile, len(nbs) - i)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(tmp),
                parameters=params,
                cwd=str(nb.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=timeout,
                log_output=log_output,
            )
            os.replace(tmp, dest)
            strip_machine_paths(dest)
            batch.results.append(NotebookResult(str(rel), True, time.perf_counter() - t0, str(dest)))
            log.info("[%d/%d] %s done in %.0f s", i, len(nbs), rel, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next notebook
            failed = dest.with_name(f"{dest.stem}.failed.ipynb")
            if tmp.exists():
                os.replace(tmp, failed)
            err = _failing_cell(exc)
            log.error("%s failed at %s (partial output: %s)", rel, err, failed)
            batch.results.append(NotebookResult(str(rel), False, time.perf_counter() - t0, str(failed), err))
    return batch
