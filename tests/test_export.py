"""`adlib export`: every method's ONNX graph run by onnxruntime against its PyTorch `predict` on the
built-in benchmark (scores, maps, decisions at a stored threshold, batch 1 and 3), the SciPy-equal
Gaussian, PatchCore's small graph, the metadata and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import shape_inference
from PIL import Image
from scipy import ndimage
from test_lifecycle import tiny

from adlib.cli import main
from adlib.data import get_dataset
from adlib.data.base import open_image, to_rgb
from adlib.export import TOLERANCE, export_onnx, export_torchscript, onnx_session, run_exported
from adlib.models.features import export_pool
from adlib.models.smoothing import GaussianFilter, reflect_indices
from adlib.thresholds import Threshold

CATEGORY = "wood"
#: label -> overrides of tests/test_lifecycle.py's tiny config: every method, the variants whose
#: inference differs (ADL without its segmentation head; ADTR with the optional Gaussian; PatchCore
#: without the reweighting, and with feature sizes the adaptive pooling does not divide), GLASS-h for
#: the GLASS variants (one network, m / h / j differ in training)
CASES = {
    "glass-m": ("glass-m", {}),
    "glass-h": ("glass-h", {"epochs": 1}),
    "simplenet": ("simplenet", {}),
    "patchcore": ("patchcore", {}),
    "patchcore-max": ("patchcore", {"reweight": False}),
    "patchcore-pool": ("patchcore", {"pretrain_embed_dim": 50, "target_embed_dim": 40}),  # sizes that do not divide
    "pouta": ("pouta", {}),
    "vanilla": ("vanilla", {}),
    "adl": ("adl", {}),
    "adl-dl": ("adl", {"variant": "dl"}),
    "draem": ("draem", {}),
    "adtr-pixel": ("adtr-pixel", {}),
    "adtr-smooth": ("adtr-pixel", {"smooth_sigma": 2.0, "epochs": 1, "adapt_epochs": 1}),
}


@pytest.fixture(scope="module")
def runs(benchmark, tmp_path_factory):
    """case -> (run folder holding model.pt, the trained model), trained lazily on the shared benchmark."""
    base = tmp_path_factory.mktemp("runs")
    cache: dict[str, tuple[Path, object]] = {}

    def get(case: str):
        if case not in cache:
            label, kw = CASES[case]
            model = tiny(label, benchmark, **kw)
            model.fit(
                get_dataset("synth", CATEGORY, "train", root=benchmark, transform=model.transform), progress=False
            )
            run = base / case
            model.save(run / "model.pt")
            cache[case] = (run, model)
        return cache[case]

    return get


def _test_set(model, benchmark):
    """The wood test set through the model's transform, and its images as the graph takes them:
    uint8 ``N x H x W x 3`` after the transform's geometry (resize, crop)."""
    ds = get_dataset("synth", CATEGORY, "test", root=benchmark, transform=model.transform)
    arrays = np.stack(
        [np.asarray(model.transform.geometry(to_rgb(open_image(r.image_path)), Image.BILINEAR)) for r in ds.records]
    )
    return ds, arrays


def _close(got, want, what: str) -> None:
    """Within :data:`TOLERANCE` absolute, relative to the largest value where that exceeds 1."""
    scale = max(1.0, float(np.abs(want).max()))
    diff = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    assert diff <= TOLERANCE * scale, f"{what}: max |diff| {diff:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_matches_pytorch_on_the_benchmark(case, runs, benchmark, tmp_path):
    run, model = runs(case)
    ds, arrays = _test_set(model, benchmark)
    ref = model.predict(ds, progress=False)
    # a stored threshold between two test scores, away from both: decisions on either side
    s = np.sort(ref.image_scores)
    gaps = np.diff(s[2:-2])
    cut = 2 + int(np.argmax(gaps))
    thr = float((s[cut] + s[cut + 1]) / 2)
    (run / "threshold.json").write_text(json.dumps(Threshold(thr, "normal-quantile", "image", {}, 8, 0).as_dict()))

    res = export_onnx(run, tmp_path / "export", opset=17)
    meta = res.metadata
    assert meta["parity"]["ok"] and meta["parity"]["same_decisions"]
    assert meta["threshold"]["value"] == pytest.approx(thr) and meta["threshold"]["rule"] == "normal-quantile"
    h, w = meta["input"]["size_hw"]
    assert arrays.shape[1:] == (h, w, 3) and meta["input"]["dtype"] == "uint8"

    sess = onnx_session(res.path, threads=1)
    scores, maps = run_exported(res.path, arrays, session=sess)
    assert scores.shape == (len(arrays),) and maps.shape == (len(arrays), h, w)
    _close(scores, ref.image_scores, f"{case} scores")
    _close(maps, ref.maps, f"{case} maps")
    np.testing.assert_array_equal(scores >= thr, ref.image_scores >= thr)
    assert 0 < int((ref.image_scores >= thr).sum()) < len(arrays)
    # the batch axis is dynamic: one image, then three, give the same outputs
    for lo, hi in ((0, 1), (1, 4)):
        sb, mb = run_exported(res.path, arrays[lo:hi], session=sess)
        assert sb.shape == (hi - lo,)
        _close(sb, ref.image_scores[lo:hi], f"{case} scores, batch {hi - lo}")
        _close(mb, ref.maps[lo:hi], f"{case} maps, batch {hi - lo}")


#: sizes with the radius (16 for sigma 4) below, and beyond, a side
@pytest.mark.parametrize(("sigma", "hw"), [(4.0, (64, 64)), (4.0, (20, 9)), (2.5, (33, 47)), (0.8, (5, 6))])
def test_gaussian_filter_equals_scipy(sigma, hw):
    maps = np.random.default_rng(0).random((2, *hw)).astype(np.float32) * 7.0
    want = np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in maps])
    got = GaussianFilter(sigma, hw)(torch.from_numpy(maps)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * 7.0)
    # the border rule: half-sample symmetric (d c b a | a b c d), repeating for a radius beyond the axis
    assert reflect_indices(3, 4).tolist() == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    assert reflect_indices(9, 16).tolist() == np.pad(np.arange(9), 16, mode="symmetric").tolist()


@pytest.mark.parametrize(("length", "size"), [(4608, 1024), (4608, 1536), (64, 32), (10, 4), (3, 7)])
def test_export_pool_equals_adaptive_avg_pool(length, size):
    x = torch.randn(5, length, generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.adaptive_avg_pool1d(x.unsqueeze(1), size).squeeze(1)
    torch.testing.assert_close(export_pool(x, size), want, rtol=1e-6, atol=1e-6)


def _shapes_at_batch_one(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """node output -> (node name, element count) for every output whose shape inference resolves
    with the batch fixed to 1."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in [*m.graph.input, *m.graph.output]:
        v.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    inferred = shape_inference.infer_shapes(m, data_prop=True)
    dims = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in inferred.graph.value_info
    }
    out = {}
    for node in inferred.graph.node:
        for o in node.output:
            d = dims.get(o)
            if d and None not in d:
                out[o] = (node.name, int(np.prod(d)))
    return out


def test_patchcore_graph_holds_the_bank_and_no_large_search(runs, tmp_path):
    _, model = runs("patchcore")
    res = export_onnx(model, tmp_path)
    graph = onnx.load(str(res.path))
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {"TopK", "Sort"}  # the nearest row by ArgMin; N_b(m*) a constant table
    assert "ArgMin" in ops
    bank = model.memory_bank
    L, D = bank.shape
    inits = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    assert (L, D) in inits.values() and (L, model.cfg.num_neighbors) in inits.values()
    # the file: the weights, the bank and its neighbour table, nothing of the size of a search
    held = sum(t.numel() * t.element_size() for t in model.export_module().state_dict().values())
    assert bank.numel() * 4 < res.path.stat().st_size <= 1.02 * held + 200_000
    # no intermediate outside the backbone features larger than patches x bank (batch 1)
    P = int(np.prod(model.fit_stats["grid"]))
    sizes = _shapes_at_batch_one(graph)
    search = {o: n for o, (name, n) in sizes.items() if name.startswith("/module/") and "/features/" not in name}
    assert search and max(search.values()) == P * L  # the squared distances, B x P x L
    assert max(search.values()) < P * L * D  # a broadcast difference B x P x L x D would be here


def test_torchscript_format(runs, benchmark, tmp_path):
    _, model = runs("glass-m")
    res = export_torchscript(model, tmp_path)
    assert res.path.name == "model.ts" and res.metadata_path.name == "model.ts.json"
    assert res.metadata["parity"]["ok"] and res.metadata["format"] == "torchscript"
    ds, arrays = _test_set(model, benchmark)
    ref = model.predict(ds, progress=False)
    scores, maps = run_exported(res.path, arrays[:3], fmt="torchscript")
    _close(scores, ref.image_scores[:3], "torchscript scores")
    _close(maps, ref.maps[:3], "torchscript maps")


def test_cli_export_writes_model_and_metadata(runs, tmp_path, capsys):
    run, model = runs("patchcore")
    (run / "threshold.json").unlink(missing_ok=True)
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out), "--opset", "18", "--name", "pc"]) == 0
    printed = capsys.readouterr().out
    assert "patchcore exported (onnx, opset 18" in printed and "no threshold" in printed
    assert sorted(p.name for p in out.iterdir()) == ["pc.json", "pc.onnx"]  # no temporary left behind
    meta = json.loads((out / "pc.json").read_text())
    assert meta["method"] == "patchcore" and meta["registry_name"] == "patchcore" and meta["opset"] == 18
    assert meta["input"]["shape"] == ["batch", 3, 64, 64] and meta["input"]["channel_order"] == "RGB"
    assert meta["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["preprocessing"]["outside_graph"]["resize"] == model.cfg.resize
    assert meta["threshold"] is None and meta["parity"]["ok"]
    assert meta["info"]["config"] == json.loads(json.dumps(model.info()["config"]))
    assert onnx.load(str(out / "pc.onnx")).opset_import[0].version == 18
    # default output folder: RUN/export; a checkpoint file as RUN
    assert main(["export", str(run)]) == 0
    assert (run / "export" / "model.onnx").is_file() and (run / "export" / "model.json").is_file()
    assert main(["export", str(run / "model.pt"), "--out", str(tmp_path / "pt")]) == 0
    assert json.loads((tmp_path / "pt" / "model.json").read_text())["run"] == str(run)


def test_cli_export_errors_are_one_line(runs, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adlib: error: no trained model") and "nope" in err[0]
    run, _ = runs("patchcore")
    assert main(["export", str(run), "--opset", "13", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["adlib: error: opset must be >= 17, got 13"]
    assert not (tmp_path / "o").exists()
