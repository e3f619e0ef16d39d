"""The rehearsal of the paper profile: every notebook end to end under ``profile="paper"`` on
miniature data, before anyone spends GPU-days on the real run.

``make rehearse`` (``adlib reproduce --rehearsal``) writes miniature datasets in each real
shipped layout (:mod:`adlib.data.miniature`: MVTec AD, VisA with its split CSV, MPDD, MAD-man,
MAD-sys, DAGM 2007, DTD, CIFAR-10/100), then executes every notebook with ``profile="paper"``
and that data root. Everything the paper profile sets stays: the methods' paper configurations
(backbones, layers, feature dimensions, losses, GAS steps, coreset ratios, schedules, the released
protocols), every table row, every figure, every notebook. Only sizes shrink:

- images: the methods' input side at most :data:`SIDE` pixels (a resize that goes with a crop
  keeps its ratio; ADTR's feature grid keeps its cell size);
- schedules: at most :data:`EPOCHS` epochs (ADTR's adaptation too) and :data:`STEPS` steps per
  epoch; learning-rate milestones scaled with the epochs (at least 1, so the decay still runs);
- seeds: the first :data:`SEEDS` of a notebook's default seeds (a mean ± sd is still computed);
- data: a handful of images per category, one category per dataset (the notebooks' plans keep
  the first category of a dataset where they would take all on disk; CIFAR-10's ten classes are
  all written, since the one-class protocol needs the nine others as anomalies);
- weights: every pretrained backbone is replaced by the same architecture, randomly initialised
  (``pretrained=False``), so no download and no weight file is needed.

Each method's config says what shrinks (``MethodConfig.REHEARSAL`` and ``rehearsal_changes``;
``tests/test_rehearsal.py`` checks that nothing else changes). A broken paper configuration (a
layer name the backbone lacks, a field that fails validation, a table that breaks on a real
layout) fails the rehearsal as it would fail the real run, minutes in instead of days.

After the notebooks, the rehearsal checks the bill (``adlib reproduce --plan``, :mod:`adlib.bill`)
against what they trained: the runs the bill lists for the datasets present must be exactly the
runs in the rehearsal's store (:func:`compare_with_bill`); a difference fails the rehearsal, so the
bill of the real run counts what the notebooks run.

WFDD is left out of the rehearsal's data root on purpose (its MVTec layout is rehearsed through
MPDD, MAD-man and MAD-sys): the notebooks must run with a paper dataset missing and show its rows
as missing.

A finished run of a rehearsal keeps its records and prediction but not its weights (hundreds of
paper-size networks would fill a CI machine's disk); a notebook that reads a trained model gets it
trained again (:meth:`adlib.results.ResultsStore.model`).

Nothing a rehearsal writes can be mistaken for results: it has its own results store
(``runs/rehearsal/paper/results``), figures folder (``runs/rehearsal/figures``) and executed
notebooks (``runs/rehearsal/notebooks``, with HTML); every table caption, every figure and every
executed notebook carries :data:`STAMP`. The switch is the environment variable :data:`ENV`,
which the notebooks' kernels and the stores' worker processes inherit.

Numerics: a rehearsal checks code paths, not numbers, so its kernels run on the machine's own CPU
numerics (``numerics="native"``, the default of :func:`rehearse`: ``$ADLIB_NUMERICS=native`` for the
kernels and their workers, oneDNN on). The reference numerics (:mod:`adlib.numerics`) switch oneDNN off
and take about twice as long: with them, adl/02's one long cell passed the 1,800 s cell limit once
under a loaded CI machine. ``rehearse(numerics="reference")`` keeps the pinned numerics.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .paths import repo_root

log = logging.getLogger(__name__)

#: the switch (any value but empty or "0"), inherited by kernels and worker processes
ENV = "ADLIB_REHEARSAL"
#: on every output of a rehearsal
STAMP = "rehearsal: random weights, miniature data — not results"
#: the largest image side a rehearsal keeps (pixels)
SIDE = 32
#: the most epochs a rehearsal keeps (ADTR's adaptation epochs too)
EPOCHS = 1
#: the most steps per epoch a rehearsal keeps
STEPS = 2
#: the seeds a rehearsal keeps of a notebook's default list (two: a spread over seeds is still computed)
SEEDS = 2
#: datasets the rehearsal's data root lacks on purpose (a missing paper dataset is rehearsed too)
LEFT_OUT = ("wfdd",)


def active() -> bool:
    """True inside a rehearsal (``$ADLIB_REHEARSAL`` set to anything but empty or ``0``)."""
    return os.environ.get(ENV, "") not in ("", "0")


def activated(on: bool = True) -> contextlib.AbstractContextManager[None]:
    """The block runs as a rehearsal (``on``) or not; the environment is restored after
    (:func:`adlib.reproduce.environ`)."""
    from .reproduce import environ

    return environ({ENV: "1" if on else "0"})


def follow(value: int, old: int, new: int) -> int:
    """``value`` scaled as ``old`` became ``new`` (a resize that follows its crop), at least 1."""
    return max(1, int(round(value * new / old)))


def crop_changes(resize: int, crop: int | None) -> dict[str, int]:
    """A resize-then-crop transform shrunk to at most :data:`SIDE`: the crop at ``SIDE`` with the
    resize following it (same ratio), or the resize alone where there is no crop; ``{}`` when it
    is small enough already."""
    if crop is not None and crop > SIDE:
        return {"crop": SIDE, "resize": follow(resize, crop, SIDE)}
    if crop is None and resize > SIDE:
        return {"resize": SIDE}
    return {}


def scaled_milestones(milestones: Sequence, old_epochs: int, new_epochs: int) -> tuple:
    """Epoch milestones scaled with the epochs (``int(m * new / old)``, at least 1, so the decay
    still happens inside a short schedule); fractions of the schedule (floats below 1) stay."""
    out = []
    for m in milestones:
        if isinstance(m, float) and m < 1:
            out.append(m)
        else:
            out.append(max(1, int(m * new_epochs / old_epochs)))
    return tuple(out)


def root() -> Path:
    """``<repo>/runs/rehearsal``: everything a rehearsal writes."""
    return repo_root() / "runs" / "rehearsal"


def stamp_caption(caption: str) -> str:
    """``caption`` with :data:`STAMP` in front inside a rehearsal (unchanged outside one)."""
    if not active():
        return caption
    return f"**{STAMP}.** {caption}".rstrip()


def stamp_figure(fig) -> None:
    """Write :data:`STAMP` across the top of a matplotlib figure inside a rehearsal."""
    if active():
        fig.text(0.5, 1.0, STAMP, ha="center", va="bottom", fontsize=9, color="#b00000", fontweight="bold")


def stamp_notebook(path: str | os.PathLike, note: str = "") -> None:
    """Put :data:`STAMP` (and ``note``) in a markdown cell at the top of an executed notebook and
    ``metadata.adlib.rehearsal = true`` (written atomically)."""
    from .io import atomic_write_text

    nb = json.loads(Path(path).read_text())
    text = f"**{STAMP}.**" + (f" {note}" if note else "")
    cell = {"cell_type": "markdown", "id": "adlib-rehearsal-stamp", "metadata": {}, "source": [text]}
    cells = nb.get("cells", [])
    if not (cells and cells[0].get("id") == cell["id"]):
        cells.insert(0, cell)
    nb["cells"] = cells
    nb.setdefault("metadata", {}).setdefault("adlib", {})["rehearsal"] = True
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def stamp_tables(folder: str | os.PathLike) -> list[Path]:
    """Put :data:`STAMP` on top of every markdown table under ``folder`` that lacks it (a table a
    notebook wrote itself rather than through :func:`adlib.tables.save_table`) and write
    ``README.md`` there saying what the folder holds (its CSVs are data files, stamped by where
    they are); returns the files stamped."""
    from .io import atomic_write_text

    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for md in sorted(folder.rglob("*.md")):
        text = md.read_text()
        if STAMP not in text:
            atomic_write_text(md, f"**{STAMP}.**\n\n{text}")
            done.append(md)
    atomic_write_text(
        folder / "README.md", f"# {STAMP}\n\nTables and figures of `make rehearse` (adlib.rehearsal): not results.\n"
    )
    return done


def write_data(data_root: str | os.PathLike | None = None, left_out: Sequence[str] = LEFT_OUT) -> Path:
    """The miniature datasets (:func:`adlib.data.miniature.write_miniature`) under ``data_root``
    (default ``runs/rehearsal/data``, rewritten from scratch), without ``left_out``."""
    import shutil

    from .data.miniature import DATASETS, write_miniature

    d = Path(data_root) if data_root else root() / "data"
    if d.exists() and data_root is None:
        shutil.rmtree(d)
    write_miniature(d, [x for x in DATASETS if x not in set(left_out)])
    return d


def rehearse(
    only: str | None = None,
    parallel: int = 2,
    data_root: str | os.PathLike | None = None,
    left_out: Sequence[str] = LEFT_OUT,
    timeout: int | None = 3600,
    jobs: int | None = None,
    log_output: bool = False,
    fresh: bool = True,
    numerics: str = "native",
):
    """Write the miniature data, then execute the notebooks (``only``: a glob, as
    :func:`adlib.reproduce.run_notebooks`) under ``profile="paper"`` as a rehearsal, into
    ``runs/rehearsal/notebooks`` (HTML beside), each stamped. ``fresh``: start from an empty
    rehearsal store and figures folder (a rehearsal checks the code, so nothing is reused from a
    previous one). ``numerics``: the kernels' :mod:`adlib.numerics` mode (``native``: the machine's
    own, see the module docstring). Returns the :class:`adlib.reproduce.BatchResult`."""
    import shutil

    from .numerics import ENV_MODE, MODES
    from .reproduce import environ, run_notebooks

    if numerics not in MODES:
        raise ValueError(f"numerics must be one of {MODES}, got {numerics!r}")

    base = root()
    if fresh:
        for sub in ("paper", "figures", "notebooks", "html"):
            shutil.rmtree(base / sub, ignore_errors=True)
    d = write_data(data_root, left_out)
    note = (
        f"Executed by `adlib reproduce --rehearsal` with the paper profile's configurations on miniature data "
        f"({', '.join(sorted(left_out)) or 'no dataset'} left out on purpose), images at most {SIDE} px, at most "
        f"{EPOCHS} epochs: the code paths of the real run, none of its numbers."
    )
    with activated(), environ({ENV_MODE: numerics}):
        batch = run_notebooks(
            profile="paper",
            data_root=str(d),
            device="cpu",
            only=only,
            out_dir=base / "notebooks",
            html_dir=base / "html",
            timeout=timeout,
            jobs=jobs,
            log_output=log_output,
            parallel=parallel,
            stamp=note,
        )
        stamp_tables(base / "figures")
        if not batch.failed:
            nbs = [r.notebook.removesuffix(".ipynb") for r in batch.results]
            unbilled, untrained = compare_with_bill(d, nbs)
            if unbilled or untrained:
                from .reproduce import NotebookResult

                detail = "; ".join(
                    [f"trained, not in the bill: {', '.join(unbilled[:5])}"] * bool(unbilled)
                    + [f"in the bill, not trained: {', '.join(untrained[:5])}"] * bool(untrained)
                )
                batch.results.append(
                    NotebookResult(
                        "the bill (adlib reproduce --plan)",
                        False,
                        0.0,
                        "",
                        f"{len(unbilled)} run(s) trained that the bill does not list, {len(untrained)} listed "
                        f"and not trained: {detail}",
                    )
                )
            else:
                log.info("the bill lists exactly the %d runs the rehearsal trained", len(_run_dirs()))
    return batch


def _run_dirs() -> set[str]:
    from .results import RECORD, ResultsStore

    store = ResultsStore.for_profile("paper")
    return {str(p.parent.relative_to(store.root)) for p in store.root.glob(f"*/*/*/*/{RECORD}")}


def compare_with_bill(data_root: str | os.PathLike, notebooks: Sequence[str]) -> tuple[list[str], list[str]]:
    """The runs a rehearsal's store holds against the runs the bill (:func:`adlib.bill.notebook_jobs`)
    lists for ``notebooks`` on the datasets present under ``data_root`` (the bill fills in missing
    datasets at their published sizes; the notebooks mark them missing): ``(trained, not billed;
    billed, not trained)``, as run folders. Both empty: ``--plan`` counts what the notebooks run."""
    from .bill import NOTEBOOKS, notebook_jobs
    from .data import DataError, list_categories
    from .results import ResultsStore

    @functools.cache
    def present(dataset: str) -> bool:
        try:
            return bool(list_categories(dataset, data_root))
        except DataError:
            return False

    with activated():
        store = ResultsStore.for_profile("paper")
        billed = set()
        for nb in notebooks:
            if nb in NOTEBOOKS:
                for job in notebook_jobs(nb, "paper", data_root):
                    if present(job.dataset):
                        billed.add(str(store.run_dir(job).relative_to(store.root)))
        trained = _run_dirs()
    return sorted(trained - billed), sorted(billed - trained)


__all__ = [
    "ENV",
    "STAMP",
    "SIDE",
    "EPOCHS",
    "STEPS",
    "SEEDS",
    "active",
    "activated",
    "compare_with_bill",
    "rehearse",
    "stamp_caption",
    "stamp_figure",
    "stamp_notebook",
    "stamp_tables",
    "write_data",
]
