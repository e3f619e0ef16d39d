"""The built-in benchmark (adlib.data.synth): layout, determinism, exact masks, weak variant,
objects, texture bank, skip / regeneration logic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from adlib.data import DataError, ImageTransform, get_dataset, list_categories
from adlib.data import synth as S

SMALL = dict(n_train=3, n_test_good=2, n_per_defect=2, size=96, workers=1, progress=False)
RAW = ImageTransform(resize=None, normalize=False)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    manifest = S.generate_benchmark(out, seed=0, weak_contrast=0.3, **SMALL)
    return out, manifest


# --------------------------------------------------------------------------- layout
def test_categories_table():
    kinds = [spec["kind"] for spec in S.CATEGORIES.values()]
    assert kinds.count("texture") >= 4 and kinds.count("object") >= 2
    for name, spec in S.CATEGORIES.items():
        assert 3 <= len(spec["defects"]) <= 4, name
        assert set(spec["defects"].values()) <= set(S._SURFACE) | set(S._GEOMETRIC)
        if spec["kind"] == "texture":  # geometric defects only make sense for objects
            assert not set(spec["defects"].values()) & set(S._GEOMETRIC)


def test_layout_readable_by_get_dataset(bench):
    out, manifest = bench
    assert list_categories("synth", out) == sorted(S.CATEGORIES)
    assert list_categories("synth-weak", out) == sorted(S.CATEGORIES)
    for cat, spec in S.CATEGORIES.items():
        train = get_dataset("synth", cat, "train", root=out, transform=RAW)
        assert len(train) == SMALL["n_train"] and set(train.defect_types) == {"good"}
        test = get_dataset("synth", cat, "test", root=out, transform=RAW)
        summary = test.summary()
        assert summary == {"good": SMALL["n_test_good"], **{d: SMALL["n_per_defect"] for d in spec["defects"]}}
        for i in range(len(test)):
            image, mask, label, defect, path = test[i]
            assert image.shape == (3, SMALL["size"], SMALL["size"])
            assert mask.shape == (1, SMALL["size"], SMALL["size"])
            assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
            if defect == "good":
                assert label == 0 and mask.sum() == 0
            else:
                assert label == 1 and mask.sum() > 0, path
        # the mask files themselves: uint8 0/255, same size as their image
        for d in spec["defects"]:
            for img in sorted((out / "synth" / cat / "test" / d).glob("*.png")):
                m = _png(out / "synth" / cat / "ground_truth" / d / f"{img.stem}_mask.png")
                assert m.dtype == np.uint8 and m.ndim == 2 and set(np.unique(m)) <= {0, 255}
                assert m.shape == _png(img).shape[:2]
        weak_test = get_dataset("synth-weak", cat, "test", root=out, transform=RAW)
        assert weak_test.summary() == summary


def test_manifests(bench):
    out, manifest = bench
    on_disk = json.loads((out / "synth" / "manifest.json").read_text())
    weak = json.loads((out / "synth-weak" / "manifest.json").read_text())
    assert on_disk["version"] == S.GENERATOR_VERSION and on_disk["seed"] == 0 and on_disk["size"] == 96
    assert manifest["categories"] == on_disk["categories"]
    assert manifest["weak_contrast"] == 0.3 and weak["contrast"] == 0.3 and weak["variant"] == "weak"
    kinds = [c["kind"] for c in on_disk["categories"].values()]
    assert kinds.count("texture") >= 4 and kinds.count("object") >= 2
    for cat, entry in on_disk["categories"].items():
        assert entry["train_good"] == 3 and entry["test_good"] == 2
        assert {d: v["count"] for d, v in entry["defects"].items()} == {d: 2 for d in S.CATEGORIES[cat]["defects"]}
    assert not list(out.rglob(S._MARKER)), "the in-progress marker must be gone after a complete run"


# --------------------------------------------------------------------------- determinism
def test_same_seed_identical_files_different_seed_differs(tmp_path):
    kw = dict(SMALL, size=64, categories=["brick", "fabric", "nut", "screw"])
    a = S.generate_benchmark(tmp_path / "a", seed=3, **kw)
    S.generate_benchmark(tmp_path / "b", seed=3, **dict(kw, workers=2))  # worker count must not matter
    assert a["seed"] == 3
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb and len(ha) > 100
    S.generate_benchmark(tmp_path / "c", seed=4, **kw)
    hc = _hashes(tmp_path / "c")
    assert ha.keys() == hc.keys()
    for cat in kw["categories"]:
        for f in ("train/good/000.png", "test/good/000.png"):
            key = f"synth/{cat}/{f}"
            assert ha[key] != hc[key], key
    bank = [k for k in ha if k.startswith("builtin-textures/images/")]
    assert all(ha[k] != hc[k] for k in bank)


def test_render_sample_matches_files_and_is_order_independent(bench):
    out, _ = bench
    # rendering another category first must not change anything (per-image generators)
    S.render_sample("wood", 1, seed=0, defect="crack", size=96)
    r = S.render_sample("pill", 1, seed=0, defect="crack", size=96)
    assert np.array_equal(r.image, _png(out / "synth" / "pill" / "test" / "crack" / "001.png"))
    assert np.array_equal(r.mask, _png(out / "synth" / "pill" / "ground_truth" / "crack" / "001_mask.png") > 0)
    g = S.render_sample("gravel", 2, seed=0, split="train", size=96)
    assert np.array_equal(g.image, _png(out / "synth" / "gravel" / "train" / "good" / "002.png"))
    assert not g.mask.any()
    # train and test good images are different draws
    assert not np.array_equal(g.image, S.render_sample("gravel", 2, seed=0, split="test", size=96).image)


# --------------------------------------------------------------------------- exact masks
@pytest.mark.parametrize("category", list(S.CATEGORIES))
def test_masks_are_exact(category):
    for defect in S.CATEGORIES[category]["defects"]:
        for index in (0, 1):
            r = S.render_sample(category, index, seed=0, defect=defect)
            clean = S.render_sample(category, index, seed=0, defect=defect, contrast=0.0).image
            assert np.array_equal(clean, r.normal)
            assert r.image.shape == (256, 256, 3) and r.image.dtype == np.uint8
            assert r.mask.shape == (256, 256) and r.mask.dtype == bool
            assert r.mask.sum() >= 20, (category, defect, index)
            change = np.abs(r.image.astype(np.int16) - r.normal).max(-1)
            outside = ~ndimage.binary_dilation(r.mask, iterations=2)
            assert change[outside].max() == 0, f"{category}/{defect}/{index}: pixels changed outside the mask"
            mean_in = np.abs(r.image.astype(np.float64) - r.normal).mean(-1)[r.mask].mean()
            assert mean_in > 8.0, f"{category}/{defect}/{index}: defect too faint ({mean_in:.1f} grey levels)"
            # the mask is not a loose box: most of it really changed
            assert (change[r.mask] > 0).mean() > 0.6, (category, defect, index)


# --------------------------------------------------------------------------- weak variant
def test_weak_variant_same_masks_lower_contrast(bench):
    out, _ = bench
    c = 0.3
    for cat, spec in S.CATEGORIES.items():
        for split in ("train", "test"):
            for f in sorted((out / "synth" / cat / split / "good").glob("*.png")):
                weak_f = out / "synth-weak" / cat / split / "good" / f.name
                assert f.read_bytes() == weak_f.read_bytes()
        for d in spec["defects"]:
            for i in range(SMALL["n_per_defect"]):
                ms = out / "synth" / cat / "ground_truth" / d / f"{i:03d}_mask.png"
                mw = out / "synth-weak" / cat / "ground_truth" / d / f"{i:03d}_mask.png"
                assert ms.read_bytes() == mw.read_bytes()
                m = _png(ms) > 0
                normal = S.render_sample(cat, i, seed=0, defect=d, size=96, contrast=0.0).image.astype(np.float64)
                strong = np.abs(_png(out / "synth" / cat / "test" / d / f"{i:03d}.png") - normal).mean(-1)[m].mean()
                weak = np.abs(_png(out / "synth-weak" / cat / "test" / d / f"{i:03d}.png") - normal).mean(-1)[m].mean()
                assert weak < 0.7 * strong, (cat, d, i)
                assert 0.5 * c <= weak / strong <= 1.5 * c, (cat, d, i, weak / strong)


def test_render_sample_contrast_is_linear():
    r1 = S.render_sample("fabric", 0, seed=1, defect="thread")
    r3 = S.render_sample("fabric", 0, seed=1, defect="thread", contrast=0.3)
    assert np.array_equal(r1.mask, r3.mask)
    d1 = r1.image.astype(np.float64) - r1.normal
    d3 = r3.image.astype(np.float64) - r3.normal
    assert np.abs(d3 - 0.3 * d1).max() <= 1.0  # up to rounding


# --------------------------------------------------------------------------- objects
OBJECTS = [c for c, s in S.CATEGORIES.items() if s["kind"] == "object"]


@pytest.mark.parametrize("category", OBJECTS)
def test_object_separable_from_background_and_defects_on_it(category):
    ious = []
    for i in range(4):
        r = S.render_sample(category, i, seed=0, split="train")
        assert 0.05 < r.foreground.mean() < 0.6
        img = r.image.astype(np.float64)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        dist = np.abs(img - np.median(border, 0)).max(-1)
        est = dist > threshold_otsu(dist)
        ious.append((est & r.foreground).sum() / (est | r.foreground).sum())
    assert min(ious) > 0.75, ious
    for defect in S.CATEGORIES[category]["defects"]:
        for i in range(3):
            r = S.render_sample(category, i, seed=0, defect=defect)
            on = (r.mask & ndimage.binary_dilation(r.foreground, iterations=1)).sum() / r.mask.sum()
            assert on > 0.9, (category, defect, i, on)


def test_textures_have_full_foreground():
    r = S.render_sample("brick", 0, seed=0, defect="hole", size=64)
    assert r.foreground.all()


# --------------------------------------------------------------------------- texture bank
def test_texture_bank_dtd_layout(bench):
    out, _ = bench
    bank = out / "builtin-textures"
    classes = sorted(p.name for p in (bank / "images").iterdir() if p.is_dir())
    assert len(classes) >= 8 and classes == sorted(S.BANK_CLASSES)
    for c in classes:
        files = sorted((bank / "images" / c).glob("*.png"))
        assert len(files) >= 6
        with Image.open(files[0]) as im:
            assert im.mode == "RGB" and im.size == (96, 96)
    readme = (bank / "README.txt").read_text()
    assert "NOT DTD" in readme and "stand-in" in readme and "adlib" in readme
    m = json.loads((bank / "manifest.json").read_text())
    # disjointness: no bank class comes from a photograph used for a benchmark category
    used = {"brick", "grass", "gravel"}
    assert not any(f"data.{u}(" in src for src in m["classes"].values() for u in used)
    # no bank image equals any benchmark image
    bench_hashes = set(_hashes(out / "synth").values())
    assert not bench_hashes & set(_hashes(bank).values())


# --------------------------------------------------------------------------- skip / regenerate
def test_rerun_skipped_and_interrupted_regenerated(tmp_path):
    kw = dict(SMALL, size=64, categories=["grass", "pill"])
    m1 = S.generate_benchmark(tmp_path, seed=0, **kw)
    before = _mtimes(tmp_path)
    m2 = S.generate_benchmark(tmp_path, seed=0, **kw)
    assert m2 == m1
    assert _mtimes(tmp_path) == before, "a rerun with the same parameters must not touch any file"

    # interrupted synth generation: manifest missing, a leftover file -> synth wiped and regenerated
    (tmp_path / "synth" / "manifest.json").unlink()
    stray = tmp_path / "synth" / "grass" / "test" / "good" / "999.png"
    stray.write_bytes(b"partial")
    weak_before = _mtimes(tmp_path / "synth-weak")
    S.generate_benchmark(tmp_path, seed=0, **kw)
    assert (tmp_path / "synth" / "manifest.json").is_file() and not stray.exists()
    after = _mtimes(tmp_path / "synth")
    old = {k[len("synth/") :]: v for k, v in before.items() if k.startswith("synth/")}
    assert after.keys() == old.keys()
    assert all(after[k] != old[k] for k in after), "every synth file must have been rewritten"
    assert _mtimes(tmp_path / "synth-weak") == weak_before, "the complete weak folder is kept"
    # same content as before: regeneration is deterministic
    get_dataset("synth", "grass", "test", root=tmp_path)

    # changed parameters (here the weak contrast) -> only that folder is regenerated
    synth_before = _mtimes(tmp_path / "synth")
    m3 = S.generate_benchmark(tmp_path, seed=0, **dict(kw, weak_contrast=0.5))
    assert m3["weak_contrast"] == 0.5
    assert json.loads((tmp_path / "synth-weak" / "manifest.json").read_text())["contrast"] == 0.5
    assert _mtimes(tmp_path / "synth") == synth_before

    # force regenerates everything
    S.generate_benchmark(tmp_path, seed=0, force=True, **dict(kw, weak_contrast=0.5))
    assert all(v != synth_before[k] for k, v in _mtimes(tmp_path / "synth").items() if k in synth_before)


def test_refuses_to_wipe_foreign_folder(tmp_path):
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "precious.txt").write_text("not ours")
    with pytest.raises(DataError, match="not generated by adlib"):
        S.generate_benchmark(tmp_path, seed=0, **dict(SMALL, size=64, categories=["wood"]))
    assert (tmp_path / "synth" / "precious.txt").read_text() == "not ours"


def test_bad_arguments():
    with pytest.raises(DataError, match="unknown synth categor"):
        S.generate_benchmark("/nonexistent-never-written", categories=["marble"])
    with pytest.raises(ValueError):
        S.generate_benchmark("/nonexistent-never-written", weak_contrast=0.0)
    with pytest.raises(DataError, match="unknown defect"):
        S.render_sample("nut", 0, defect="crack")
    with pytest.raises(DataError, match="test split"):
        S.render_sample("nut", 0, defect="chip", split="train")


def test_no_stdout(tmp_path, capsys):
    S.generate_benchmark(tmp_path, seed=0, **dict(SMALL, size=64, categories=["screw"]))
    assert capsys.readouterr().out == ""
