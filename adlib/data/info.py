"""What a data root holds: datasets, categories, split sizes and defect types."""

from __future__ import annotations

import os

import pandas as pd

from . import DATASETS, DataError, _layout, dataset_dir, get_dataset, list_categories


def category_table(name: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per category of dataset ``name``: train/test counts and defect types.

    Columns: ``dataset, category, train_good, test_good, test_anomalous, defect_types``; a defect
    type with images shipped without a mask says how many (``spot (4, 3 without mask)``).
    A category whose split cannot be indexed raises :class:`DataError` naming the problem.
    """
    rows = []
    for cat in list_categories(name, root):
        train = get_dataset(name, cat, "train", root=root)
        test = get_dataset(name, cat, "test", root=root)
        counts = test.summary()
        defects = sorted(d for d in counts if d != "good")
        unmasked: dict[str, int] = {}
        for r in test.records:
            if r.label == 1 and not getattr(r, "mask_known", True):
                unmasked[r.defect_type] = unmasked.get(r.defect_type, 0) + 1
        rows.append(
            dict(
                dataset=name,
                category=cat,
                train_good=int((train.labels == 0).sum()),
                test_good=counts.get("good", 0),
                test_anomalous=int((test.labels == 1).sum()),
                defect_types=", ".join(
                    f"{d} ({counts[d]}, {unmasked[d]} without mask)" if d in unmasked else f"{d} ({counts[d]})"
                    for d in defects
                ),
            )
        )
    return pd.DataFrame(
        rows, columns=["dataset", "category", "train_good", "test_good", "test_anomalous", "defect_types"]
    )


def describe_root(root: str | os.PathLike) -> dict[str, pd.DataFrame | list[str]]:
    """Everything found under ``root``: a table per anomaly dataset, the class list for DTD.

    ``root`` may be a data root holding dataset folders, or one dataset folder itself.
    """
    found: dict[str, object] = {}
    seen = set()
    for name, spec in DATASETS.items():
        try:
            path = dataset_dir(name, root)
        except DataError:
            continue
        key = os.path.realpath(path)
        if key in seen:  # the root itself matched several names of one layout
            continue
        seen.add(key)
        if spec.layout == "dtd":
            found[name] = _layout(spec).categories(path)
        else:
            found[name] = category_table(name, root)
    if not found:
        raise DataError(f"no known dataset found under {root}; known: {', '.join(DATASETS)}")
    return found
