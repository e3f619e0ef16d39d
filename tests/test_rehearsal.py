"""The rehearsal of the paper profile (adlib.rehearsal): what shrinks, the miniature layouts, the
stamps, its own store and figures, and that a broken paper config fails it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from adlib import rehearsal
from adlib.data import get_dataset, list_categories
from adlib.data.miniature import CIFAR10_CLASSES, DATASETS, write_miniature
from adlib.models.base import MODELS, _load_all
from adlib.papers.common import plan
from adlib.paths import figures_dir, repo_root
from adlib.results import Job, default_root

#: the only fields a rehearsal may change: sizes, schedules, and the weights
SIZE_FIELDS = {
    "resize",
    "crop",
    "image_size",
    "grid",
    "k",
    "epochs",
    "adapt_epochs",
    "steps_per_epoch",
    "lr_milestones",
    "lr_step",
    "pretrained",
}


def _configs(method: str, on: bool, **overrides):
    with rehearsal.activated(on):
        return MODELS[method].Config.for_profile("paper", **overrides).as_dict()


@pytest.mark.parametrize("method", ["glass", "simplenet", "patchcore", "pouta", "vanilla", "adl", "adtr", "draem"])
def test_only_sizes_shrink(method):
    _load_all()
    paper, rehearsed = _configs(method, False), _configs(method, True)
    changed = {k for k in paper if paper[k] != rehearsed[k]}
    assert changed, f"{method}: a rehearsal must shrink something"
    assert changed <= SIZE_FIELDS, f"{method}: the rehearsal changed {sorted(changed - SIZE_FIELDS)}"
    for k in changed - {"pretrained", "lr_milestones"}:
        assert rehearsed[k] < paper[k], (method, k)
    if "pretrained" in paper:
        assert rehearsed["pretrained"] is False
    for k in ("image_size", "crop"):  # DRAEM keeps 64 px: its bottleneck is 1/32 of the side
        if rehearsed.get(k):
            assert rehearsed[k] <= (64 if method == "draem" else rehearsal.SIDE)
    assert rehearsed.get("epochs", 0) <= rehearsal.EPOCHS
    # the smoke profile is never touched, and outside a rehearsal the paper profile is the paper's
    with rehearsal.activated():
        assert MODELS[method].Config.for_profile("smoke").as_dict() == _smoke(method)


def _smoke(method):
    with rehearsal.activated(False):
        return MODELS[method].Config.for_profile("smoke").as_dict()


def test_coupled_sizes_follow():
    _load_all()
    side, epochs = rehearsal.SIDE, rehearsal.EPOCHS
    simplenet = _configs("simplenet", True)  # resize 329 before a 288 crop: the ratio stays
    assert (simplenet["crop"], simplenet["resize"]) == (side, round(329 * side / 288))
    adtr = _configs("adtr", True)  # 256 px on a 16 x 16 grid: one cell of 16 px stays one cell
    grid = round(16 * side / 256)
    assert (adtr["image_size"], adtr["grid"], adtr["score_pool"]) == (side, grid, 16)
    assert adtr["k"] == max(1, round(20 * grid**2 / 256)) and adtr["lr_milestones"] == (1,)
    assert adtr["adapt_epochs"] == epochs
    pouta = _configs("pouta", True)  # (480, 540) of 600 epochs -> never below 1
    assert pouta["lr_milestones"] == (1, 1)
    adl = _configs("adl", True)
    assert (adl["epochs"], adl["steps_per_epoch"], adl["lr_step"]) == (epochs, rehearsal.STEPS, 1)
    # a table's override (ADTR's CIFAR-10 rows at 32 px) is smaller already and stays
    cifar = _configs("adtr", True, image_size=32, grid=8)
    assert (cifar["image_size"], cifar["grid"], cifar["k"]) == (32, 8, 20)
    # the fractions of DRAEM's schedule stay fractions
    assert _configs("draem", True)["lr_milestones"] == _configs("draem", False)["lr_milestones"]


def test_follow_and_milestones_by_hand():
    assert rehearsal.follow(329, 288, 64) == 73
    assert rehearsal.follow(3, 1000, 1) == 1
    assert rehearsal.scaled_milestones((480, 540), 600, 60) == (48, 54)
    assert rehearsal.scaled_milestones((400,), 500, 2) == (1,)
    assert rehearsal.scaled_milestones((0.8, 0.9), 700, 2) == (0.8, 0.9)


def test_job_keys_differ_inside_a_rehearsal():
    job = Job.make("glass-m", "mvtec", "hazelnut", "paper", 0)
    with rehearsal.activated(False):
        real = job.key()
    with rehearsal.activated():
        rehearsed = job.key()
    assert real["config_hash"] != rehearsed["config_hash"]
    assert rehearsed["weights"] != real["weights"]


def test_own_store_and_figures_folder(monkeypatch):
    with rehearsal.activated():
        assert default_root("paper") == repo_root() / "runs" / "rehearsal" / "paper" / "results"
        assert figures_dir("glass") == repo_root() / "runs" / "rehearsal" / "figures" / "glass"
    with rehearsal.activated(False):
        assert default_root("paper") == repo_root() / "runs" / "paper" / "results"
        assert figures_dir() == repo_root() / "figures"
    monkeypatch.setenv(rehearsal.ENV, "0")
    assert not rehearsal.active()
    monkeypatch.setenv(rehearsal.ENV, "1")
    assert rehearsal.active()


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    write_miniature(root)
    return root


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d != "dtd"])
def test_miniature_layouts_read_by_the_real_readers(mini, dataset):
    cats = list_categories(dataset, mini)
    cat = cats[0]
    train = get_dataset(dataset, cat, "train", root=mini)
    test = get_dataset(dataset, cat, "test", root=mini)
    labels = np.array([test[i].label for i in range(len(test))])
    assert set(labels.tolist()) == ({1} if dataset == "cifar100" else {0, 1})
    assert all(train[i].label == (1 if dataset == "cifar100" else 0) for i in range(len(train)))
    if dataset.startswith("cifar"):
        assert cats == (list(CIFAR10_CLASSES) if dataset == "cifar10" else ["all"])
        if dataset == "cifar10":  # nine anomalous classes of two images, two normal ones
            assert (len(train), int(labels.sum()), int((labels == 0).sum())) == (3, 18, 2)
        return
    assert (len(train), len(test), int(labels.sum())) == (8, 13, 10)
    for i in np.flatnonzero(labels):  # every defect has a non-empty binary mask; normal ones none
        m = test[int(i)].mask
        assert float(m.sum()) > 0 and set(np.unique(m.numpy()).tolist()) <= {0.0, 1.0}
    for i in np.flatnonzero(labels == 0):
        assert float(test[int(i)].mask.sum()) == 0


def test_miniature_files_as_shipped(mini):
    visa = (mini / "visa" / "split_csv" / "1cls.csv").read_text().splitlines()
    assert visa[0] == "object,split,label,image,mask" and len(visa) == 1 + 8 + 3 + 10
    masks = sorted((mini / "visa" / "candle" / "Data" / "Masks" / "Anomaly").glob("*.png"))
    assert {int(np.asarray(Image.open(p)).max()) for p in masks} == {1, 2}  # class ids, not 0/255
    image = Image.open(next((mini / "visa" / "candle" / "Data" / "Images" / "Normal").glob("*.JPG")))
    assert image.width > image.height
    dagm = mini / "dagm" / "Class1"
    assert Image.open(next(dagm.joinpath("Test").glob("*.PNG"))).mode == "L"
    rows = (dagm / "Train" / "Label" / "Labels.txt").read_text().splitlines()
    assert len(rows) == 1 + 8 + 1  # header, the normal images, one defective (left out of training)
    assert (mini / "mpdd" / "metal_plate" / "ground_truth" / "foreign" / "000.png").is_file()
    assert (mini / "mvtec" / "hazelnut" / "ground_truth" / "chip" / "000_mask.png").is_file()
    assert sorted(p.name for p in mini.joinpath("mad-sys").iterdir()) == ["wood"]
    assert sorted(p.name for p in mini.joinpath("mvtec").iterdir()) == ["hazelnut", "wood"]
    assert sorted(p.name for p in (mini / "dtd" / "images").iterdir()) == ["banded", "marbled", "woven"]


def test_miniature_is_deterministic(mini, tmp_path):
    write_miniature(tmp_path, ["visa", "cifar10"])
    for rel in ("visa/split_csv/1cls.csv", "visa/candle/Data/Images/Anomaly/011.JPG", "cifar-10-batches-py/test_batch"):
        assert (tmp_path / rel).read_bytes() == (mini / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="no miniature layout for \\['coco'\\]"):
        write_miniature(tmp_path, ["coco"])


def test_plan_keeps_one_category_per_dataset_in_a_rehearsal(mini, tmp_path):
    rehearsal.write_data(tmp_path, left_out=("wfdd",))
    assert not (tmp_path / "wfdd").exists() and (tmp_path / "mpdd").is_dir()
    with rehearsal.activated():
        p = plan(["cifar10", "mvtec", "wfdd"], tmp_path)
        assert p.categories == {"cifar10": ["airplane"], "mvtec": ["hazelnut"]}
        assert "wfdd" in p.missing
        p = plan(["cifar10", "mvtec", "wfdd"], mini)
        assert p.categories == {"cifar10": ["airplane"], "mvtec": ["hazelnut"], "wfdd": ["grey_cloth"]}
    with rehearsal.activated():
        assert plan(["cifar10"], mini, ["cat", "dog"]).categories == {"cifar10": ["cat", "dog"]}
    with rehearsal.activated(False):
        assert plan(["cifar10"], mini).categories["cifar10"] == list(CIFAR10_CLASSES)


def test_stamps(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adlib.tables import save_table
    from adlib.viz import save_figure

    table = pd.DataFrame({"image_auroc": [50.0]}, index=["hazelnut"])
    with rehearsal.activated():
        csv, md = save_table(table, "t", caption="GLASS Table 1", directory=tmp_path)
        fig = plt.figure()
        paths = save_figure(fig, "f", "rehearsal-test", formats=("png",))
    assert md.read_text().startswith(f"**{rehearsal.STAMP}.** GLASS Table 1")
    assert rehearsal.STAMP in table.attrs["caption"]
    assert any(t.get_text() == rehearsal.STAMP for t in fig.texts)
    assert paths[0].parent == repo_root() / "runs" / "rehearsal" / "figures" / "rehearsal-test"
    shutil.rmtree(paths[0].parent)
    plt.close(fig)
    with rehearsal.activated(False):
        _, md = save_table(table, "u", caption="GLASS Table 1", directory=tmp_path)
    assert md.read_text().startswith("GLASS Table 1")
    figs = tmp_path / "figures"
    own = figs / "datasets" / "counts_paper.md"  # a table a notebook wrote itself
    own.parent.mkdir(parents=True)
    own.write_text("| a |\n|---|\n| 1 |\n")
    with rehearsal.activated():
        save_table(table, "t", "glass", directory=figs / "glass")
    assert rehearsal.stamp_tables(figs) == [own]  # save_table's carry it already
    assert own.read_text().startswith(f"**{rehearsal.STAMP}.**") and rehearsal.stamp_tables(figs) == []
    assert rehearsal.STAMP in (figs / "README.md").read_text()
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": [], "metadata": {}}], "metadata": {}}))
    rehearsal.stamp_notebook(nb, "note")
    rehearsal.stamp_notebook(nb, "note")  # once only
    cells = json.loads(nb.read_text())["cells"]
    assert len(cells) == 2 and cells[0]["source"] == [f"**{rehearsal.STAMP}.** note"]
    assert json.loads(nb.read_text())["metadata"]["adlib"]["rehearsal"] is True


def _copy_of_the_project(tmp: Path, notebook: str) -> Path:
    """pyproject.toml, the adlib package and one notebook: a checkout the rehearsal runs in."""
    root = repo_root()
    shutil.copy(root / "pyproject.toml", tmp / "pyproject.toml")
    shutil.copytree(root / "adlib", tmp / "adlib", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "notebooks" / Path(notebook).parent).mkdir(parents=True)
    shutil.copy(root / "notebooks" / notebook, tmp / "notebooks" / notebook)
    return tmp


@pytest.mark.slow
def test_a_broken_paper_config_fails_the_rehearsal(tmp_path):
    """A layer name the paper backbone lacks, in GLASS's paper config, fails ``adlib reproduce
    --rehearsal`` (exit 1, the failing cell named), as it would fail the real run."""
    copy = _copy_of_the_project(tmp_path, "glass/02_tsne.ipynb")
    src = copy / "adlib" / "models" / "glass.py"
    text = src.read_text()
    good = 'layers: tuple[str, ...] = ("layer2", "layer3")'
    assert text.count(good) == 1
    src.write_text(text.replace(good, 'layers: tuple[str, ...] = ("layer2", "layer33")'))
    env = {**os.environ, "PYTHONPATH": str(copy), "ADLIB_MAX_WORKERS": "1"}
    env.pop(rehearsal.ENV, None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "adlib.cli",
            "reproduce",
            "--profile",
            "paper",
            "--rehearsal",
            "--only",
            "glass/02_tsne",
        ],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL" in out.stdout and "glass/02_tsne" in out.stdout
    assert "layer33" in out.stdout, out.stdout
    failed = copy / "runs" / "rehearsal" / "notebooks" / "glass" / "02_tsne.failed.ipynb"
    assert failed.is_file()


def test_the_rehearsal_kernels_run_on_the_machines_own_numerics(monkeypatch, tmp_path):
    """A rehearsal checks code paths, not numbers: its kernels start with ``ADLIB_NUMERICS=native``
    (oneDNN on, about half the time of the reference numerics), unless asked for the reference; the
    variable is restored after."""
    import types

    from adlib import numerics, reproduce

    seen = []

    def run_notebooks(**kw):
        seen.append((os.environ.get(numerics.ENV_MODE), rehearsal.active(), kw["profile"]))
        return types.SimpleNamespace(failed=True, results=[])

    monkeypatch.setattr(reproduce, "run_notebooks", run_notebooks)
    monkeypatch.setattr(rehearsal, "write_data", lambda *a, **k: tmp_path / "data")
    monkeypatch.setattr(rehearsal, "root", lambda: tmp_path / "rehearsal")
    monkeypatch.delenv(numerics.ENV_MODE, raising=False)
    rehearsal.rehearse()
    rehearsal.rehearse(numerics="reference")
    assert seen == [("native", True, "paper"), ("reference", True, "paper")]
    assert numerics.ENV_MODE not in os.environ
    with pytest.raises(ValueError, match="numerics"):
        rehearsal.rehearse(numerics="fast")


def test_readiness_of_the_miniature_root(mini):
    """``adlib data info`` on the rehearsal's data: DAGM's ``Class1`` folder is the papers' ``class1``."""
    from adlib.readiness import readiness

    r = readiness(mini)
    dagm = r.datasets["dagm"]
    assert dagm.present and dagm.categories == ["Class1"]
    assert "class1" not in dagm.missing_categories and "class2" in dagm.missing_categories
    assert r.datasets["dtd"].train_images == 6
    assert "present: 1 category, 8 train, 13 test" in r.text()
