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


def _run_dir(out, label, dataset="mvtec", category="wood"):
    """The one run folder of ``label`` in the results store at ``out`` (``s<seed>-<hash>``)."""
    (run,) = sorted((out / label / dataset / category).glob("s*-*"))
    return run


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
    run = _run_dir(out, label)
    assert (run / "model.pt").is_file() and (run / "train.json").is_file() and not (run / "record.json").exists()
    assert main(["test", *_args(method, mvtec_root, out, *extra)]) == 0
    rec = json.loads((run / "record.json").read_text())
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


def test_interrupted_training_resumes_from_its_checkpoint(mvtec_root, tmp_path, monkeypatch):
    from adlib.models.glass import GLASS

    out = tmp_path / "runs"
    args = _args("glass", mvtec_root, out, "--variant", "m", "--epochs", "2")
    run_epoch, calls = GLASS._run_epoch, []

    def crash_in_second_epoch(self, data):
        calls.append(self.epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return run_epoch(self, data)

    monkeypatch.setattr(GLASS, "_run_epoch", crash_in_second_epoch)
    assert main(["train", *args]) == 130  # Ctrl-C: one line, exit status 130
    run = _run_dir(out, "glass-m")
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "train.json").exists()
    monkeypatch.setattr(GLASS, "_run_epoch", run_epoch)
    assert main(["train", *args]) == 0
    rec = json.loads((run / "train.json").read_text())
    assert rec["model"]["config"]["epochs"] == 2 and rec["model"]["epochs_trained"] == 2
    assert calls == [0, 1]  # the resumed fit ran only the second epoch (through the original method)


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


@pytest.mark.parametrize("method", ["pouta", "vanilla", "draem"])
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
    rec = json.loads((_run_dir(out, method, dataset, category) / "record.json").read_text())
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
    run = _run_dir(out, "adl-proposed", dataset, category)
    train = json.loads((run / "train.json").read_text())
    # int(eps / (1 - eps) * N) hidden anomalies: mvtec 4 normal -> 2, visa 3 normal -> 1
    detail = train["protocol_detail"]
    assert detail["n_contaminating"] == hidden and detail["contamination_protocol"] == "leak-free"
    rec = json.loads((run / "record.json").read_text())
    assert rec["protocol"]["contamination"] == eps and rec["model"]["config"]["variant"] == "proposed"
    assert rec["test_images"] == detail["test_images"]  # the leak-free test set, the same draw
    assert 0.0 <= rec["metrics"]["image_auroc"] <= 1.0


# ----------------------------------------------------------------------------------------------
# One run pipeline: the CLI and the notebooks' results store share runs


def test_a_notebook_job_reuses_a_run_trained_by_the_cli(mvtec_root, tmp_path, monkeypatch):
    from adlib.models.glass import GLASS
    from adlib.results import Job, ResultsStore

    out = tmp_path / "runs"
    assert main(["train", *_args("glass", mvtec_root, out, "--variant", "m", "--epochs", "1")]) == 0
    run = _run_dir(out, "glass-m")
    trained = (run / "model.pt").read_bytes()

    def no_training(self, *args, **kwargs):
        raise AssertionError("the notebook's job trained again")

    monkeypatch.setattr(GLASS, "fit", no_training)
    # what a notebook does: a job of the same method, data, seed and settings, through the store
    store = ResultsStore(out, data_root=str(mvtec_root), progress=False)
    job = Job.make("glass", "mvtec", "wood", "smoke", 0, variant="m", epochs=1)
    assert store.run_dir(job) == run and store.get(job) is None
    rec = store.run(job)  # tests the CLI's model, does not train
    assert (run / "model.pt").read_bytes() == trained and store.get(job) == rec
    assert rec["train_seconds"] == json.loads((run / "train.json").read_text())["train_seconds"]
    assert set(rec["metrics"]) >= {"image_auroc", "pixel_auroc", "au_pro"}
    assert len(store.frame([job])) == 1
    # and `adlib test` reads the record the notebook path wrote
    assert main(["test", *_args("glass", mvtec_root, out, "--variant", "m", "--epochs", "1")]) == 0
    assert json.loads((run / "record.json").read_text()) == rec


def test_cli_test_finds_a_run_the_notebooks_trained(mvtec_root, tmp_path, capsys):
    from adlib.results import Job, ResultsStore

    out = tmp_path / "runs"
    store = ResultsStore(out, data_root=str(mvtec_root), progress=False)
    rec = store.run(Job.make("patchcore", "mvtec", "wood", "smoke", 0))
    assert main(["test", *_args("patchcore", mvtec_root, out)]) == 0
    printed = capsys.readouterr().out
    assert f"image_auroc={rec['metrics']['image_auroc']:.4f}" in printed and "record.json" in printed
    assert main(["train", *_args("patchcore", mvtec_root, out)]) == 0  # finished: nothing to train
    assert len(list((out / "patchcore" / "mvtec" / "wood").iterdir())) == 1


def test_test_set_selection_works_through_the_pipeline(mvtec_root, tmp_path):
    """GLASS's released protocol (select_best_on_test) needs the test set in fit: the pipeline
    passes it, from the CLI and from the store alike."""
    out = tmp_path / "runs"
    # (and a variant's registry name is a method name of the command line: glass-m = glass --variant m)
    args = _args("glass-m", mvtec_root, out, "--epochs", "2", "--set", "select_best_on_test=True")
    assert main(["train", *args]) == 0 and main(["test", *args]) == 0
    rec = json.loads((_run_dir(out, "glass-m") / "record.json").read_text())
    assert rec["model"]["selection"]["mode"] == "best-on-test" and rec["model"]["config"]["select_best_on_test"]


def test_method_options_come_from_the_methods_config(mvtec_root, tmp_path, capsys):
    from adlib.cli import build_parser

    adtr_help = build_parser("adtr")._subparsers._group_actions[0].choices["train"].format_help()
    from adlib.models import available_names

    glass_help = build_parser("glass", available_names())._subparsers._group_actions[0].choices["train"].format_help()
    assert "--labels" in adtr_help and "--anomalies" in adtr_help and "adtr options" in adtr_help
    assert "--labels" not in glass_help and "glass-j" in glass_help and "vanilla" in glass_help  # the registry's names
    assert "--labels" in build_parser("adtr-pixel")._subparsers._group_actions[0].choices["test"].format_help()
    with pytest.raises(SystemExit):  # an ADTR option given to another method is refused by the parser
        main(["train", *_args("glass", mvtec_root, tmp_path, "--labels", "pixel")])
    assert "unrecognized arguments: --labels" in capsys.readouterr().err
