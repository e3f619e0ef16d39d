"""`adlib train` / `adlib test` end to end on MVTec-style data, with provenance, resume and errors."""

import json
import shutil

import pytest

from adlib.cli import main
from adlib.data.synth import generate_benchmark
from adlib.models import available_models


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    """A tiny built-in benchmark exposed under the name `mvtec` (same layout as MVTec AD)."""
    root = tmp_path_factory.mktemp("data")
    generate_benchmark(
        root, seed=2, categories=["wood"], n_train=4, n_test_good=3, n_per_defect=1, size=64, progress=False
    )
    shutil.copytree(root / "synth", root / "mvtec")
    return root


def _args(method, root, out, *extra):
    return [method, "--dataset", "mvtec", "--category", "wood", "--data-root", str(root), "--out", str(out), *extra]


@pytest.mark.parametrize(
    "method,extra",
    [("glass", ["--variant", "m", "--epochs", "1"]), ("simplenet", ["--epochs", "1"]), ("patchcore", [])],
)
def test_train_then_test_writes_metrics_with_provenance(mvtec_root, tmp_path, method, extra):
    if method not in available_models():
        pytest.fail(f"method {method} is not registered")
    out = tmp_path / "runs"
    assert main(["train", *_args(method, mvtec_root, out, *extra)]) == 0
    label = f"{method}-m" if "--variant" in extra else method
    run = out / label / "mvtec" / "wood"
    assert (run / "model.pt").is_file() and (run / "train.json").is_file()
    assert main(["test", *_args(method, mvtec_root, out, *extra)]) == 0
    rec = json.loads((run / "metrics.json").read_text())
    assert rec["profile"] == "smoke" and rec["dataset"] == "mvtec" and rec["category"] == "wood"
    assert "random-init" in json.dumps(rec["model"])  # the weights used are recorded
    for k in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "au_pro"):
        assert 0.0 <= rec["metrics"][k] <= 1.0
    from adlib.data.synth import CATEGORIES

    assert rec["test_images"] == 3 + len(CATEGORIES["wood"]["defects"])  # 3 good + 1 per defect type


def test_test_without_training_fails_clearly(mvtec_root, tmp_path, capsys):
    assert main(["test", *_args("glass", mvtec_root, tmp_path, "--variant", "m")]) == 2
    assert "no trained model" in capsys.readouterr().err


def test_unknown_method_and_bad_override(mvtec_root, tmp_path, capsys):
    assert main(["train", *_args("nope", mvtec_root, tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["train", *_args("glass", mvtec_root, tmp_path, "--set", "no_such_field=1")]) == 2
    assert "no_such_field" in capsys.readouterr().err


def test_interrupted_training_resumes_from_its_checkpoint(mvtec_root, tmp_path):
    out = tmp_path / "runs"
    assert main(["train", *_args("glass", mvtec_root, out, "--variant", "m", "--epochs", "1")]) == 0
    ckpt = out / "glass-m" / "mvtec" / "wood" / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    assert main(["train", *_args("glass", mvtec_root, out, "--variant", "m", "--epochs", "2")]) == 0
    rec = json.loads((out / "glass-m" / "mvtec" / "wood" / "train.json").read_text())
    assert rec["model"]["config"]["epochs"] == 2


@pytest.fixture(scope="module")
def layouts_root(tmp_path_factory, mvtec_root):
    """MVTec-style (the built-in `wood` as `mvtec`), VisA (split_csv/1cls.csv) and DAGM 2007
    (Labels.txt) layouts under one data root, written by the loaders' own test writers."""
    from test_data_layouts import make_dagm, make_visa

    root = tmp_path_factory.mktemp("layouts")
    shutil.copytree(mvtec_root / "mvtec", root / "mvtec")
    shutil.copytree(mvtec_root / "builtin-textures", root / "builtin-textures")
    make_visa(root / "VisA_20220922", objects=("candle",))
    make_dagm(root / "DAGM2007", classes=("Class1",))
    return root


@pytest.mark.parametrize("method", ["pouta", "vanilla"])
@pytest.mark.parametrize("dataset,category", [("mvtec", "wood"), ("visa", "candle"), ("dagm", "Class1")])
def test_reconstruction_methods_train_and_test_on_each_layout(layouts_root, tmp_path, method, dataset, category):
    out = tmp_path / "runs"
    args = [
        method,
        "--dataset",
        dataset,
        "--category",
        category,
        "--data-root",
        str(layouts_root),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--set",
        "image_size=32",
    ]
    assert main(["train", *args]) == 0 and main(["test", *args]) == 0
    rec = json.loads((out / method / dataset / category / "metrics.json").read_text())
    assert rec["dataset"] == dataset and rec["model"]["weights"] == "none (trained from scratch)"
    assert rec["model"]["texture_is_stand_in"] is True  # the built-in bank, not DTD, and it says so
    assert rec["model"]["config"]["image_size"] == 32 and rec["model"]["epochs_trained"] == 1
    for k in ("image_auroc", "pixel_auroc"):
        assert 0.0 <= rec["metrics"][k] <= 1.0


@pytest.mark.parametrize("dataset,category,eps,hidden", [("mvtec", "wood", 0.4, 2), ("visa", "candle", 0.25, 1)])
def test_adl_trains_and_tests_under_contamination(layouts_root, tmp_path, dataset, category, eps, hidden):
    out = tmp_path / "runs"
    args = [
        "adl",
        "--dataset",
        dataset,
        "--category",
        category,
        "--data-root",
        str(layouts_root),
        "--out",
        str(out),
        "--contamination",
        str(eps),
        "--epochs",
        "1",
        "--set",
        "steps_per_epoch=1",
        "--set",
        "batch_size=2",
    ]
    assert main(["train", *args]) == 0 and main(["test", *args]) == 0
    run = out / "adl-proposed" / dataset / category / f"eps{eps:g}-seed0"
    train = json.loads((run / "train.json").read_text())
    # int(eps / (1 - eps) * N) hidden anomalies: mvtec 4 normal -> 2, visa 3 normal -> 1
    assert train["protocol"]["n_contaminating"] == hidden and train["protocol"]["contamination_protocol"] == "leak-free"
    rec = json.loads((run / "metrics.json").read_text())
    assert rec["protocol"]["contamination"] == eps and rec["model"]["config"]["variant"] == "proposed"
    assert rec["test_images"] == train["protocol"]["test_images"]  # the leak-free test set, the same draw
    assert 0.0 <= rec["metrics"]["image_auroc"] <= 1.0
