"""Tiled inference (`adlib.predict.predict_tiled`, `adlib predict --tile`): the grid, the stitching, a real model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_lifecycle import tiny

from adlib.cli import main
from adlib.data import get_dataset
from adlib.models.core import ImagePredictions
from adlib.predict import predict_tiled, stitch, tile_grid

CATEGORY = "wood"


def test_tile_grid_positions_by_hand_and_coverage():
    # 100 wide, 70 high, tiles of 40, overlap 0.25: stride 30; columns start at 0, 30 and 60 (= 100 - 40,
    # flush with the border), rows at 0 and 30 (= 70 - 40)
    grid = tile_grid(70, 100, 40, 0.25)
    assert grid == [
        (0, 0, 40, 40),
        (0, 30, 40, 40),
        (0, 60, 40, 40),
        (30, 0, 40, 40),
        (30, 30, 40, 40),
        (30, 60, 40, 40),
    ]
    # no overlap: stride 40, the last tile still flush (start 60 overlaps the one at 40 by 20 pixels)
    assert [left for _, left, _, _ in tile_grid(40, 100, 40, 0.0)] == [0, 40, 60]
    # a side that fits is not cut; an image that fits is one tile, itself
    assert tile_grid(30, 100, 40, 0.25) == [(0, 0, 30, 40), (0, 30, 30, 40), (0, 60, 30, 40)]
    assert tile_grid(40, 25, 40, 0.5) == [(0, 0, 40, 25)]
    # every pixel covered, every tile inside the image, for a range of sizes and overlaps
    for h, w, t, ov in [(70, 100, 40, 0.25), (257, 129, 64, 0.5), (64, 65, 64, 0.0), (1000, 999, 333, 0.9)]:
        cover = np.zeros((h, w), dtype=int)
        for top, left, th, tw in tile_grid(h, w, t, ov):
            assert top >= 0 and left >= 0 and top + th <= h and left + tw <= w
            cover[top : top + th, left : left + tw] += 1
        assert cover.min() >= 1


@pytest.mark.parametrize("tile, overlap", [(0, 0.25), (40.5, 0.25), (40, 1.0), (40, -0.1)])
def test_tile_grid_refuses_bad_values(tile, overlap):
    with pytest.raises(ValueError, match="tile must be|overlap must be"):
        tile_grid(70, 100, tile, overlap)


class _FakeModel:
    """Scores each tile with a map given by ``map_of(crop, k)`` and the score ``k + 1`` (k: its
    index in the call); records the crops it was given."""

    def __init__(self, map_of):
        self.map_of = map_of
        self.calls: list[list[Image.Image]] = []

    def predict_images(self, images, *, device=None, progress=False, transform=None):
        self.calls.append(list(images))
        return ImagePredictions(
            paths=[f"<image {k}>" for k in range(len(images))],
            scores=np.arange(1.0, len(images) + 1.0),
            maps=[self.map_of(im, k) for k, im in enumerate(images)],
        )


def test_stitch_averages_constant_tile_maps_by_hand():
    # tile k (row by row) has the constant map k + 1; the 100 x 70 image, tiles of 40 with stride 30
    img = np.zeros((70, 100, 3), dtype=np.uint8)
    fake = _FakeModel(lambda im, k: np.full((im.size[1], im.size[0]), k + 1.0, dtype=np.float32))
    got = predict_tiled(fake, [img], tile=40, overlap=0.25)
    assert [im.size for im in fake.calls[0]] == [(40, 40)] * 6
    # rows 0-29 lie in the top row of tiles only, 30-39 in both, 40-69 in the bottom row only;
    # columns 0-29 in tile column 0, 30-39 in 0 and 1, 40-59 in 1, 60-69 in 1 and 2, 70-99 in 2
    rows = [(0, 30), (30, 40), (40, 70)]
    cols = [(0, 30), (30, 40), (40, 60), (60, 70), (70, 100)]
    want_blocks = [
        [1.0, 1.5, 2.0, 2.5, 3.0],  # tiles 1 | 1,2 | 2 | 2,3 | 3
        [2.5, 3.0, 3.5, 4.0, 4.5],  # tiles 1,4 | 1,2,4,5 | 2,5 | 2,3,5,6 | 3,6
        [4.0, 4.5, 5.0, 5.5, 6.0],  # tiles 4 | 4,5 | 5 | 5,6 | 6
    ]
    want = np.zeros((70, 100), dtype=np.float32)
    for (r0, r1), vals in zip(rows, want_blocks):
        for (c0, c1), v in zip(cols, vals):
            want[r0:r1, c0:c1] = v
    assert got.maps[0].shape == (70, 100) and got.maps[0].dtype == np.float32
    np.testing.assert_array_equal(got.maps[0], want)
    assert got.scores.tolist() == [6.0]  # the maximum of the tiles' scores 1..6
    assert got.paths == ["<array 0>"]


def test_tiles_are_cut_where_the_grid_says():
    # each tile's map is its own red channel: stitched, the image's red channel comes back exactly
    yy, xx = np.mgrid[0:70, 0:100]
    img = np.zeros((70, 100, 3), dtype=np.uint8)
    img[..., 0] = xx + 2 * yy  # at most 99 + 138 = 237
    fake = _FakeModel(lambda im, k: np.asarray(im, dtype=np.float32)[..., 0])
    got = predict_tiled(fake, [Image.fromarray(img)], tile=40, overlap=0.25)
    np.testing.assert_array_equal(got.maps[0], img[..., 0].astype(np.float32))
    assert got.paths == ["<image 0>"]
    # an image that fits in a tile goes through whole, as one tile
    small = img[:30, :20]
    fake = _FakeModel(lambda im, k: np.asarray(im, dtype=np.float32)[..., 0])
    got = predict_tiled(fake, [small], tile=40)
    assert [im.size for im in fake.calls[0]] == [(20, 30)]
    np.testing.assert_array_equal(got.maps[0], small[..., 0].astype(np.float32))
    assert got.scores.tolist() == [1.0]


def test_stitch_refuses_a_wrong_tile_map_size():
    with pytest.raises(ValueError, match=r"tile map at \(0, 30\) has shape \(5, 5\)"):
        stitch([np.zeros((40, 40)), np.zeros((5, 5))], [(0, 0, 40, 40), (0, 30, 40, 40)], 40, 70)
    with pytest.raises(ValueError, match="do not cover"):
        stitch([np.zeros((40, 40))], [(0, 0, 40, 40)], 40, 70)


@pytest.fixture(scope="module")
def patchcore(benchmark, tmp_path_factory):
    """A tiny PatchCore (input 64 x 64) trained on the benchmark's wood, saved as a run, and a
    192 x 192 image: a 3 x 3 mosaic of normal wood test images with a bright 10 x 10 square pasted
    at rows 140-149, columns 20-29 (inside the tile at (128, 0) only)."""
    model = tiny("patchcore", benchmark)
    model.fit(get_dataset("synth", CATEGORY, "train", root=benchmark, transform=model.transform), progress=False)
    base = tmp_path_factory.mktemp("tiling")
    model.save(base / "run" / "model.pt")
    good = sorted((Path(benchmark) / "synth" / CATEGORY / "test" / "good").glob("*.png"))
    tiles = [np.asarray(Image.open(good[k % len(good)]).convert("RGB")) for k in range(9)]
    assert tiles[0].shape == (64, 64, 3)
    big = np.concatenate([np.concatenate(tiles[r * 3 : r * 3 + 3], axis=1) for r in range(3)], axis=0)
    big = big.copy()
    big[140:150, 20:30] = 255
    (base / "imgs").mkdir()
    Image.fromarray(big).save(base / "imgs" / "big.png")
    return model, base / "run", base / "imgs" / "big.png"


def test_real_patchcore_tiled_map_peaks_at_the_pasted_defect(patchcore):
    model, _, path = patchcore
    got = model.predict_images([path], tile=64, overlap=0.25)
    amap = got.maps[0]
    assert amap.shape == (192, 192)
    r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
    assert 128 <= r < 192 and 0 <= c < 64  # the tile holding the square
    assert 132 <= r < 158 and 12 <= c < 38  # and at the square (8 pixels of margin for the smoothing)
    # the same mosaic without the square: a lower score, a peak elsewhere
    img = Image.open(path).convert("RGB")
    clean = np.asarray(img).copy()
    clean[140:150, 20:30] = np.asarray(img)[140:150, 84:94]  # the same wood, one image to the right
    ref = model.predict_images([clean], tile=64, overlap=0.25)
    assert got.scores[0] > 2 * ref.scores[0]
    # the score: the maximum of the tiles' own scores, each tile scored as an image of its own
    crops = [img.crop((left, top, left + tw, top + th)) for top, left, th, tw in tile_grid(192, 192, 64, 0.25)]
    own = model.predict_images(crops)
    assert got.scores[0] == pytest.approx(float(own.scores.max()), rel=1e-6)
    # without a tile, predict_images is what it was: one image, one map at its size
    whole = model.predict_images([path])
    assert whole.maps[0].shape == (192, 192) and whole.scores[0] != pytest.approx(got.scores[0], rel=1e-6)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_predict_with_tile_writes_scores_and_overlays(patchcore, tmp_path, capsys):
    model, run, path = patchcore
    out = tmp_path / "out"
    argv = ["predict", str(run), str(path.parent), "--tile", "64", "--overlap", "0.5", "--out", str(out), "--npy"]
    assert main(argv) == 0
    (row,) = _read_csv(out / "scores.csv")
    want = model.predict_images([path], tile=64, overlap=0.5)
    assert row["file"] == str(path) and float(row["score"]) == pytest.approx(want.scores[0], rel=1e-6)
    with Image.open(out / "overlays" / "big.png") as im:
        assert im.size == (192, 192)
    np.testing.assert_allclose(np.load(out / "maps" / "big.npy"), want.maps[0], rtol=1e-6)
    # --overlap without --tile, and a bad tile: one error line each
    capsys.readouterr()
    assert main(["predict", str(run), str(path), "--overlap", "0.5", "--out", str(tmp_path / "o")]) == 2
    assert "--overlap goes with --tile" in capsys.readouterr().err
    assert main(["predict", str(run), str(path), "--tile", "0", "--out", str(tmp_path / "o")]) == 2
    assert "tile must be a whole number of pixels >= 1, got 0" in capsys.readouterr().err
