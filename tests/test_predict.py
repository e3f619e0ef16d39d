"""`Method.predict_images` and `adlib predict`: any images, maps at their own size, a stored threshold."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score
from test_lifecycle import tiny

from adlib.cli import main
from adlib.data import get_dataset
from adlib.data.base import AnomalyDataset, DataError, ImageTransform, Record
from adlib.metrics import image_f1_max, resize_maps
from adlib.models.core import map_to_input
from adlib.predict import collect_images, output_names
from adlib.thresholds import from_normal

CATEGORY = "wood"
#: one tiny model of every method (tests/test_lifecycle.py's TINY configs)
LABELS = ["glass-m", "simplenet", "patchcore", "pouta", "vanilla", "adl", "draem", "adtr-pixel"]


@pytest.fixture(scope="module")
def runs(benchmark, tmp_path_factory):
    """label -> (run folder holding model.pt, the trained model), trained lazily on the shared benchmark."""
    base = tmp_path_factory.mktemp("runs")
    cache: dict[str, tuple[Path, object]] = {}

    def get(label: str):
        if label not in cache:
            model = tiny(label, benchmark)
            model.fit(
                get_dataset("synth", CATEGORY, "train", root=benchmark, transform=model.transform), progress=False
            )
            run = base / label
            model.save(run / "model.pt")
            cache[label] = (run, model)
        return cache[label]

    return get


@pytest.fixture(scope="module")
def images(benchmark, tmp_path_factory):
    """A folder of the wood test images (2 good, and 1 of each defect type; repeated stems across
    sub-folders) and a folder of held-out normal images (the training images)."""
    root = tmp_path_factory.mktemp("images")
    test = Path(benchmark) / "synth" / CATEGORY / "test"
    for sub in sorted(p for p in test.iterdir() if p.is_dir()):
        keep = sorted(sub.glob("*.png"))[: 2 if sub.name == "good" else 1]
        (root / "imgs" / sub.name).mkdir(parents=True)
        for p in keep:
            shutil.copy(p, root / "imgs" / sub.name / p.name)
    shutil.copytree(Path(benchmark) / "synth" / CATEGORY / "train" / "good", root / "normal")
    return root


def _records(paths) -> list[Record]:
    return [Record(Path(p), int(Path(p).parent.name != "good"), Path(p).parent.name) for p in paths]


@pytest.mark.parametrize("label", LABELS)
def test_predict_images_maps_at_input_size_and_scores_of_predict(label, runs, images, tmp_path):
    _, model = runs(label)
    files = [p for p, _ in collect_images([images / "imgs"])][:3]
    small = np.asarray(Image.open(files[0]).convert("RGB"))  # 64 x 64
    other = np.asarray(Image.fromarray(small).resize((80, 48), Image.BILINEAR))  # 48 x 80
    Image.fromarray(other).save(tmp_path / "other.png")
    got = model.predict_images([*files, other, Image.fromarray(small)])
    assert got.paths == [*map(str, files), "<array 3>", "<image 4>"]
    assert [m.shape for m in got.maps] == [(64, 64)] * 3 + [(48, 80), (64, 64)]
    assert all(m.dtype == np.float32 for m in got.maps)
    # the same images through a dataset with the model's transform and its own predict
    ds = AnomalyDataset(_records([*files, tmp_path / "other.png"]), transform=model.transform)
    ref = model.predict(ds, progress=False)
    np.testing.assert_allclose(got.scores[:4], ref.image_scores, rtol=1e-5, atol=1e-6)
    assert got.scores[4] == pytest.approx(got.scores[0], rel=1e-5, abs=1e-6)  # the array of file 0
    side = ref.maps.shape[-1]
    if model.transform.crop is None or model.transform.crop == model.transform.resize:
        np.testing.assert_allclose(got.maps[0], resize_maps(ref.maps[0], (64, 64)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.maps[3], resize_maps(ref.maps[3], (48, 80)), rtol=1e-5, atol=1e-6)
    assert ref.maps.shape[-2:] == (side, side)


def test_map_to_input_undoes_the_crop_by_hand():
    # resize 8 then centre crop 4 of an 8 x 8 input: the crop is rows/cols 2..5; outside it the minimum
    amap = np.arange(16, dtype=np.float32).reshape(4, 4) + 1.0
    out = map_to_input(amap, ImageTransform(resize=8, crop=4), (8, 8))
    want = np.full((8, 8), 1.0, dtype=np.float32)
    want[2:6, 2:6] = amap
    np.testing.assert_array_equal(out, want)
    # no crop: a constant map stays constant at any size
    out = map_to_input(np.full((4, 4), 3.0), ImageTransform(resize=4), (5, 7))
    assert out.shape == (5, 7) and np.allclose(out, 3.0)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("label", LABELS)
def test_cli_predict_folder_with_normal_threshold(label, runs, images, tmp_path):
    run, model = runs(label)
    (run / "threshold.json").unlink(missing_ok=True)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(images / "imgs"), "--normal", str(images / "normal"), "--out", str(out)]) == 0
    files = [p for p, _ in collect_images([images / "imgs"])]
    rows = _read_csv(out / "scores.csv")
    assert [r["file"] for r in rows] == [str(p) for p in files]
    # the threshold: the 0.99 normal quantile of the normal images' scores, stored with the run
    normal_scores = model.predict_images(sorted((images / "normal").glob("*.png"))).scores
    thr = from_normal(normal_scores, 0.99)
    stored = json.loads((run / "threshold.json").read_text())
    assert stored["value"] == pytest.approx(thr.value) and stored["n_normal"] == len(normal_scores)
    scores = np.array([float(r["score"]) for r in rows])
    assert [r["decision"] for r in rows] == ["anomalous" if s >= thr.value else "normal" for s in scores]
    assert {r["rule"] for r in rows} == {"normal-quantile"}
    assert {float(r["threshold"]) for r in rows} == {stored["value"]}
    # overlays at each image's size, named apart although the stems repeat (good/000, crack/000)
    names = output_names([rel for _, rel in collect_images([images / "imgs"])])
    assert "good__000" in names and len(set(names)) == len(files)
    for p, n in zip(files, names):
        with Image.open(out / "overlays" / f"{n}.png") as im:
            assert im.size == Image.open(p).size
    assert not (out / "maps").exists()


def test_cli_stored_threshold_given_threshold_npy_and_none(runs, images, tmp_path, caplog):
    run, model = runs("patchcore")
    (run / "threshold.json").unlink(missing_ok=True)
    one = sorted((images / "imgs" / "good").glob("*.png"))[0]
    # no threshold anywhere: empty decisions
    assert main(["predict", str(run), str(one), "--out", str(tmp_path / "a"), "--no-overlays", "--npy"]) == 0
    (row,) = _read_csv(tmp_path / "a" / "scores.csv")
    assert row["decision"] == "" and row["threshold"] == "" and row["rule"] == ""
    assert not (tmp_path / "a" / "overlays").exists()
    amap = np.load(tmp_path / "a" / "maps" / "000.npy")
    np.testing.assert_allclose(amap, model.predict_images([one]).maps[0], rtol=1e-6)
    score = float(row["score"])
    # a given threshold just above / at the score
    assert main(["predict", str(run), str(one), "--out", str(tmp_path / "b"), "--threshold", str(score * 2)]) == 0
    (row,) = _read_csv(tmp_path / "b" / "scores.csv")
    assert row["decision"] == "normal" and row["rule"] == "given"
    # a stored threshold is used when none is given
    (run / "threshold.json").write_text(
        json.dumps(
            {"value": score, "rule": "normal-quantile", "level": "image", "params": {}, "n_normal": 3, "n_anomalous": 0}
        )
    )
    assert main(["predict", str(run), str(one), "--out", str(tmp_path / "c")]) == 0
    (row,) = _read_csv(tmp_path / "c" / "scores.csv")
    assert row["decision"] == "anomalous" and float(row["threshold"]) == score  # score >= threshold
    (run / "threshold.json").unlink()


def test_patchcore_f1_at_the_normal_threshold_is_consistent(runs, images, benchmark, tmp_path):
    run, model = runs("patchcore")
    (run / "threshold.json").unlink(missing_ok=True)
    out = tmp_path / "out"
    assert main(["predict", str(run), str(images / "imgs"), "--normal", str(images / "normal"), "--out", str(out)]) == 0
    rows = _read_csv(out / "scores.csv")
    labels = np.array([int(Path(r["file"]).parent.name != "good") for r in rows])
    decisions = np.array([r["decision"] == "anomalous" for r in rows])
    tp = int((decisions & (labels == 1)).sum())
    fp = int((decisions & (labels == 0)).sum())
    fn = int((~decisions & (labels == 1)).sum())
    f1 = f1_score(labels, decisions.astype(int), zero_division=0.0)
    assert f1 == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    # the same decisions as the model's own predict on those images at that threshold
    thr = json.loads((run / "threshold.json").read_text())["value"]
    ref = model.predict(AnomalyDataset(_records([r["file"] for r in rows]), transform=model.transform), progress=False)
    np.testing.assert_array_equal(decisions, ref.image_scores >= thr)
    assert f1 <= image_f1_max(labels, ref.image_scores) + 1e-12  # no threshold beats the best one


def test_cli_errors_are_one_line(runs, images, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), str(images / "imgs")]) == 2
    assert "model.pt not found" in capsys.readouterr().err
    run, _ = runs("patchcore")
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(run), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err
    bad = tmp_path / "bad" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    assert main(["predict", str(run), str(bad.parent), "--out", str(tmp_path / "o")]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]  # beside the progress bar
    assert line.startswith("adlib: error: cannot read image") and "broken.png" in line
    assert main(["predict", str(run), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_collect_images_files_folders_globs(tmp_path):
    for rel in ("a/x.png", "a/sub/y.JPG", "a/.hidden.png", "a/notes.txt", "b/z.bmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = collect_images([tmp_path / "a", str(tmp_path / "b" / "*.bmp"), tmp_path / "a" / "x.png"])
    assert [rel for _, rel in got] == ["sub/y.JPG", "x.png", "z.bmp"]  # x.png once
    with pytest.raises(DataError, match="no images found"):
        collect_images([str(tmp_path / "*.gif")])
    assert output_names(["good/000.png", "crack/000.png", "x/a.png"]) == ["good__000", "crack__000", "a"]


def test_cli_uses_the_runs_per_category_transform(benchmark, images, tmp_path):
    # GLASS with the released per-category resize: MVTec wood is resized to round(64 * 329 / 288) = 73
    model = tiny("glass-m", benchmark, category_resize="released", epochs=1)
    model.fit(get_dataset("synth", CATEGORY, "train", root=benchmark, transform=model.transform), progress=False)
    run = tmp_path / "run"
    model.save(run / "model.pt")
    (run / "train.json").write_text(json.dumps({"method": "glass", "dataset": "mvtec", "category": "wood"}))
    tf = model.transform_for("mvtec", "wood")
    assert tf.resize == 73 and model.transform.resize == 64
    one = sorted((images / "imgs").rglob("*.png"))[-1]
    assert main(["predict", str(run), str(one), "--out", str(tmp_path / "o"), "--no-overlays"]) == 0
    (row,) = _read_csv(tmp_path / "o" / "scores.csv")
    want = model.predict_images([one], transform=tf).scores[0]
    plain = model.predict_images([one]).scores[0]
    assert float(row["score"]) == pytest.approx(want, rel=1e-6) and want != pytest.approx(plain, rel=1e-6)
