"""Is a data root ready for the paper profile? Datasets and categories each notebook needs, what is
present (with counts), what is missing, and the pretrained weights (:mod:`adlib.weights`).

>>> r = readiness("/data")          # doctest: +SKIP
>>> print(r.text())                 # doctest: +SKIP

What each notebook needs comes from the paper modules (:mod:`adlib.papers`): their dataset
constants (``MAIN_DATASETS``, ``WEAK_DATASETS``, ``DATASETS``) and ``NOTEBOOK_DEFAULTS`` (a
notebook's dataset, or the one category it shows); :func:`notebook_needs` only says which constant
each notebook reads, as the notebook's code does. The categories a paper reports per category
(:mod:`adlib.reported`) are the ones expected of a dataset (MVTec AD 15, VisA 12, DAGM 10); a
dataset whose papers report averages only has no expected list. Notebooks that train a method
with synthetic anomalies (GLASS LAS, POUTA, ADL, DRAEM) need DTD as texture source; without it the
built-in stand-in is used and said so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

EVALUATED = "evaluated"
TEXTURES = "texture source"
OUTLIERS = "outliers (optional)"


@dataclass(frozen=True)
class Need:
    """One dataset a notebook reads: its role and the categories it asks for (None: all on disk)."""

    notebook: str
    dataset: str
    role: str = EVALUATED
    categories: tuple[str, ...] | None = None


def notebook_needs(profile: str = "paper") -> list[Need]:
    """Every (notebook, dataset) the profile's notebooks read, from the paper modules' constants."""
    from .papers import adl, adtr, glass, pouta
    from .profiles import get_profile

    out: list[Need] = []

    def add(nb: str, datasets: Sequence[str], cats: Any = None, textures: bool = False, role: str = EVALUATED):
        one = (cats,) if isinstance(cats, str) else (tuple(cats) if cats else None)
        out.extend(Need(nb, d, role, one) for d in datasets)
        if textures:
            out.append(Need(nb, "dtd", TEXTURES))

    g, p, a, t = glass.NOTEBOOK_DEFAULTS, pouta.NOTEBOOK_DEFAULTS, adl.NOTEBOOK_DEFAULTS, adtr.NOTEBOOK_DEFAULTS
    main, weak = tuple(glass.MAIN_DATASETS[profile]), tuple(glass.WEAK_DATASETS[profile])
    add("00_datasets", [d for d in get_profile(profile).datasets if d != "dtd"], textures=True)
    add("glass/01_synthesis", [g["01_synthesis"][profile]["dataset"]], textures=True)
    add("glass/02_tsne", [g["02_tsne"][profile]["dataset"]], g["02_tsne"][profile]["category"], textures=True)
    add("glass/03_main_tables", main + weak, g["03_main_tables"][profile]["categories"], textures=True)
    add("glass/04_ablations", main[:1] + weak, g["04_ablations"][profile]["categories"], textures=True)
    add("glass/05_sensitivity", main[:1], g["05_sensitivity"][profile]["categories"], textures=True)
    ds1 = pouta.DATASETS["table1"][profile]
    add("pouta/01_representations", ds1[:1], p["01_representations"][profile]["category"], textures=True)
    tables = [d for k in ("table1", "table2", "table3") for d in pouta.DATASETS[k][profile]]
    add("pouta/02_main_tables", list(dict.fromkeys(tables)), p["02_main_tables"][profile]["categories"], textures=True)
    add("pouta/03_few_shot", pouta.DATASETS["table4"][profile], p["03_few_shot"][profile]["categories"], textures=True)
    add("pouta/04_ablations", ds1, p["04_ablations"][profile]["categories"], textures=True)
    add("adl/00_contamination", [a["00_contamination"][profile]["dataset"]])
    for nb in ("01_main_table", "02_robustness", "03_ablation_sensitivity"):
        add(f"adl/{nb}", adl.DATASETS[profile], a[nb][profile]["categories"], textures=True)
    add("adtr/01_confetti", [t["01_confetti"][profile]["dataset"]])
    add("adtr/02_main_tables", adtr.DATASETS["main"][profile], t["02_main_tables"][profile]["categories"])
    add("adtr/02_main_tables", adtr.DATASETS["cifar"][profile])
    if adtr.DATASETS["cifar"][profile]:
        add("adtr/02_main_tables", ["cifar100"], role=OUTLIERS)
    for nb in ("03_ablations", "04_push_pull"):
        add(f"adtr/{nb}", adtr.DATASETS["main"][profile], t[nb][profile]["categories"])
    return out


def expected_categories(dataset: str) -> list[str] | None:
    """The categories the papers report per category for ``dataset`` (:mod:`adlib.reported`); None
    where only averages are reported."""
    from . import reported

    df = reported.load()
    cats = df[(df.dataset == dataset) & ~df.category.isin(["average", "all", "mean", ""])].category.dropna()
    return sorted(set(cats)) or None


@dataclass
class DatasetStatus:
    dataset: str
    role: str
    needed_by: list[str] = field(default_factory=list)
    present: bool = False
    path: str = ""
    categories: list[str] = field(default_factory=list)
    expected: list[str] | None = None
    wanted: dict[str, list[str]] = field(default_factory=dict)  # notebook -> the categories it names
    train_images: int = 0
    test_images: int = 0
    detail: str = ""

    @property
    def missing_categories(self) -> list[str]:
        want = set(self.expected or []) | {c for cs in self.wanted.values() for c in cs}
        # the papers write DAGM's classes "class1", the archive's folders are "Class1"
        have = {c.lower() for c in self.categories}
        return sorted(c for c in want if c.lower() not in have) if self.present else sorted(want)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["missing_categories"] = self.missing_categories
        return d


def _count(dataset: str, root, tables: dict | None = None) -> DatasetStatus:
    from .data import DataError, dataset_dir
    from .data import dtd as _dtd

    st = DatasetStatus(dataset, "")
    try:
        path = dataset_dir(dataset, root)
    except DataError as exc:
        st.detail = str(exc).splitlines()[0]
        return st
    st.path = str(path)
    try:
        if dataset == "dtd":
            imgs = _dtd.images(path)
            st.categories = _dtd.categories(path)
            st.train_images = len(imgs)
        else:
            from .data.info import category_table

            known = (tables or {}).get(dataset)
            tab = known if known is not None and hasattr(known, "category") else category_table(dataset, root)
            st.categories = list(tab.category)
            st.train_images = int(tab.train_good.sum())
            st.test_images = int((tab.test_good + tab.test_anomalous).sum())
        st.present = True
    except DataError as exc:
        st.detail = f"present but unreadable: {str(exc).splitlines()[0]}"
    return st


@dataclass
class Readiness:
    root: str
    needs: list[Need]
    datasets: dict[str, DatasetStatus]
    weights: list  # adlib.weights.Found

    def notebook_status(self) -> dict[str, str]:
        """notebook -> ``ready`` or what is missing (rows marked missing, stand-in textures)."""
        out: dict[str, str] = {}
        for nb in dict.fromkeys(n.notebook for n in self.needs):
            mine = [n for n in self.needs if n.notebook == nb]
            ev = [n for n in mine if n.role == EVALUATED]
            gone = [n.dataset for n in ev if not self.datasets[n.dataset].present]
            notes = []
            if ev and len(gone) == len(ev):
                notes.append(f"nothing to run: {', '.join(gone)} missing")
            elif gone:
                notes.append(f"{', '.join(gone)} missing (rows marked missing)")
            for n in ev:
                st = self.datasets[n.dataset]
                absent = [c for c in (n.categories or ()) if st.present and c not in st.categories]
                if absent:
                    notes.append(f"{n.dataset} lacks {', '.join(absent)}")
            for n in mine:
                if n.role == TEXTURES and not self.datasets[n.dataset].present:
                    notes.append("no DTD: the built-in texture stand-in is used (not DTD)")
                if n.role == OUTLIERS and not self.datasets[n.dataset].present:
                    notes.append(f"no {n.dataset}: runs without outliers")
            out[nb] = "; ".join(notes) or "ready"
        return out

    @property
    def ready(self) -> bool:
        return all(s == "ready" for s in self.notebook_status().values()) and all(
            w.status == "ready" for w in self.weights
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ready": self.ready,
            "notebooks": self.notebook_status(),
            "datasets": {k: v.as_dict() for k, v in self.datasets.items()},
            "weights": [w.as_dict() for w in self.weights],
        }

    def text(self) -> str:
        from .weights import _table, check_table

        rows = []
        for d, st in self.datasets.items():
            if st.present:
                exp = f"/{len(st.expected)}" if st.expected else ""
                counts = (
                    f"{st.train_images} images" if d == "dtd" else f"{st.train_images} train, {st.test_images} test"
                )
                n = len(st.categories)
                status = f"present: {n}{exp} {'category' if n == 1 and not exp else 'categories'}, {counts}"
                if st.missing_categories:
                    status += f"; missing categories: {', '.join(st.missing_categories)}"
            else:
                status = "missing" + (f" ({st.detail})" if st.detail.startswith("present") else "")
            expected = str(len(st.expected)) if st.expected else "-"
            named = sorted({c for cs in st.wanted.values() for c in cs})
            if named:
                expected += f" ({', '.join(named)} named)"
            rows.append((d, st.role, expected, status, _short(st.needed_by)))
        nbs = list(self.notebook_status().items())
        weights_ok = sum(w.status == "ready" for w in self.weights)
        return "\n\n".join(
            [
                f"paper profile readiness of {self.root}",
                _table(("dataset", "role", "categories expected", "status", "needed by"), rows),
                _table(("notebook", "status"), nbs),
                f"pretrained weights ({weights_ok} of {len(self.weights)} ready; `adlib weights list` says where to get them):\n"
                + check_table(self.weights),
                "ready: yes" if self.ready else "ready: no (missing datasets become rows marked missing; see above)",
            ]
        )


def _short(notebooks: list[str]) -> str:
    """``glass/03_main_tables, glass/04_ablations`` -> ``glass/03, 04``."""
    groups: dict[str, list[str]] = {}
    for nb in notebooks:
        paper, _, name = nb.rpartition("/")
        groups.setdefault(paper, []).append(name.split("_")[0])
    return "; ".join(f"{p}/{', '.join(n)}" if p else ", ".join(n) for p, n in groups.items())


def readiness(
    root: str | os.PathLike | None = None,
    profile: str = "paper",
    weights_dir: str | None = None,
    tables: dict | None = None,
) -> Readiness:
    """What the profile's notebooks need under ``root``, what is there and what is missing; the
    weights as :func:`adlib.weights.check` sees them (``weights_dir``: its ``--dir``). ``tables``:
    :func:`adlib.data.info.describe_root`'s answer for ``root``, reused instead of indexing again."""
    from .paths import data_root
    from .weights import check

    needs = notebook_needs(profile)
    statuses: dict[str, DatasetStatus] = {}
    for n in needs:
        if n.dataset not in statuses:
            st = _count(n.dataset, root, tables)
            st.role = n.role
            st.expected = expected_categories(n.dataset) if n.role == EVALUATED else None
            statuses[n.dataset] = st
        st = statuses[n.dataset]
        if n.notebook not in st.needed_by:
            st.needed_by.append(n.notebook)
        if n.categories:
            st.wanted[n.notebook] = list(n.categories)
    return Readiness(str(data_root(root)), needs, statuses, check(weights_dir, profile) if profile == "paper" else [])


__all__ = ["Need", "Readiness", "DatasetStatus", "expected_categories", "notebook_needs", "readiness"]
