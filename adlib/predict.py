"""``adlib predict``: a trained model on any images, with a stored decision threshold.

::

    adlib predict RUN IMAGES_OR_FOLDERS... [--out DIR] [--threshold VALUE | --normal DIR [--quantile Q]]
                  [--npy] [--no-overlays] [--device D] [--tile T [--overlap 0.25]]

``RUN`` is a run folder holding ``model.pt`` (``adlib train``, the results store). Inputs are
image files, folders (searched recursively for the suffixes of :data:`adlib.data.base.IMAGE_SUFFIXES`,
case-insensitively, hidden files skipped) or glob patterns. Each image goes through the model's own
transform (:func:`run_transform`: a per-category resize from the run's ``train.json``); its map is
taken back to the image's size (:meth:`adlib.models.core.Method.predict_images`).

The threshold (:mod:`adlib.thresholds`, anomalous when ``score >= threshold``), first that applies:
``--threshold VALUE``; ``--normal DIR``: the normal-quantile threshold (``--quantile``, default
0.99) of the scores of those held-out normal images, stored in ``RUN/threshold.json``; the
``--quantile Q`` alone, for a run trained with ``--calibration``: that quantile of the held-out
normal scores it stored (:func:`recalibrate`); the ``RUN/threshold.json`` stored earlier (by
``--normal``, or at training by ``adlib train --calibration F``: :mod:`adlib.protocols`); else no
decision (the column is left empty).

Outputs in ``--out`` (default ``RUN/predict``): ``scores.csv`` (``file, score, decision,
threshold, rule``), ``overlays/<name>.png`` (the image with its map as a heat overlay, one colour
scale for all images of the call) unless ``--no-overlays``, ``maps/<name>.npy`` with ``--npy``.
``<name>`` is the file's stem, or its path below the folder given with ``/`` as ``__`` when stems
repeat (``good/000.png`` and ``crack/000.png``: ``good__000``, ``crack__000``).

``--tile T``: tiled inference for images larger than the model's input (:func:`predict_tiled`):
an image larger than ``T`` pixels on a side is cut into overlapping tiles (:func:`tile_grid`), each
scored as an image of its own, the maps stitched back by averaging and the image's score the maximum
over its tiles. The held-out normal images of ``--normal`` are tiled alike, so that the threshold is
on the same scale as the scores it decides on.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.base import IMAGE_SUFFIXES, DataError
from .io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

THRESHOLD_FILE = "threshold.json"
#: a ``calibration`` run's held-out normal scores (:mod:`adlib.results`, ``adlib train --calibration``)
CALIBRATION_FILE = "calibration.json"
_SUFFIXES = {s.lower() for s in IMAGE_SUFFIXES}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")


def collect_images(inputs) -> list[tuple[Path, str]]:
    """The images of ``inputs`` (files, folders searched recursively, glob patterns), in order,
    each once, as ``(path, relative name)``: the name is the path below the folder it was found in
    (a file's or a glob match's own name otherwise). :class:`DataError` for an input that is
    neither (named), and when nothing is found."""
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(p: Path, rel: str) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append((p, rel))

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(path).parts):
                    add(p, p.relative_to(path).as_posix())
        elif path.is_file():
            if path.suffix.lower() not in _SUFFIXES:
                raise DataError(f"{path} is not an image file (suffixes: {', '.join(sorted(_SUFFIXES))})")
            add(path, path.name)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            for m in matches:
                if m.is_dir():
                    for p in sorted(m.rglob("*")):
                        if _is_image(p):
                            add(p, p.relative_to(m).as_posix())
                elif _is_image(m):
                    add(m, m.name)
        else:
            raise DataError(f"no such image file or folder: {item}")
    if not out:
        raise DataError(f"no images found in {', '.join(map(str, inputs))} (suffixes: {', '.join(sorted(_SUFFIXES))})")
    return out


def output_names(rels: list[str]) -> list[str]:
    """File-name stems for the outputs of images named ``rels`` (:func:`collect_images`): the
    stem, or, for stems that repeat, the relative path without suffix, ``/`` as ``__``; a
    remaining clash gets ``-<index>``."""
    stems = [Path(r).stem for r in rels]
    names = [
        s if stems.count(s) == 1 else str(Path(r).with_suffix("")).replace(os.sep, "__").replace("/", "__")
        for s, r in zip(stems, rels)
    ]
    return [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]


def read_threshold(run: Path):
    """The :class:`~adlib.thresholds.Threshold` stored in ``run/threshold.json``, None if absent;
    ``ValueError`` naming the file when it cannot be read."""
    from .thresholds import Threshold

    path = Path(run) / THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        return Threshold.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read the threshold {path}: {exc}") from exc


def recalibrate(run: Path, quantile: float):
    """The normal-quantile threshold at ``quantile`` of the held-out normal scores a
    ``calibration`` run stored (``run/calibration.json``), written to ``run/threshold.json``;
    ``ValueError`` naming the file when it cannot be read."""
    from .thresholds import Threshold, from_normal

    path = Path(run) / CALIBRATION_FILE
    try:
        scores = json.loads(path.read_text())["scores"]
        thr = from_normal(np.asarray(scores, dtype=np.float64), quantile)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the held-out scores of {path}: {exc}") from exc
    thr = Threshold(thr.value, thr.rule, thr.level, {**thr.params, "source": "calibration hold-out"}, thr.n_normal, 0)
    atomic_write_json(Path(run) / THRESHOLD_FILE, thr.as_dict())
    return thr


def run_transform(run: Path, model):
    """The transform the run was trained and tested with: a method that resizes per category
    (GLASS's ``transform_for``, the released wood/toothbrush resize) gets the dataset and category
    of ``run/train.json`` (or ``record.json``); otherwise, or without them, ``model.transform``."""
    for_category = getattr(model, "transform_for", None)
    if for_category is None:
        return model.transform
    for name in ("train.json", "record.json"):
        path = Path(run) / name
        if not path.is_file():
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
        if isinstance(rec, dict) and rec.get("dataset") and rec.get("category"):
            return for_category(str(rec["dataset"]), str(rec["category"]))
    return model.transform


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def overlay_image(image_path_or_rgb, amap: np.ndarray, lo: float, hi: float, alpha: float = 0.5) -> np.ndarray:
    """``H x W x 3`` uint8: the image blended with ``amap`` through the ``jet`` colour map, the
    map scaled from ``[lo, hi]`` to [0, 1] (clipped), ``alpha`` the heat's weight."""
    from matplotlib import colormaps

    from .data.base import open_image

    if isinstance(image_path_or_rgb, np.ndarray):
        rgb = image_path_or_rgb
    else:
        rgb = np.asarray(open_image(Path(image_path_or_rgb), "RGB"))
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    norm = np.clip((np.asarray(amap, dtype=np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    heat = colormaps["jet"](norm)[..., :3] * 255.0
    return np.clip(np.rint((1 - alpha) * rgb.astype(np.float64) + alpha * heat), 0, 255).astype(np.uint8)


def _positions(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one side: ``0, stride, 2 * stride, ...`` before ``length - tile``, then
    ``length - tile`` (the last tile flush with the border); ``[0]`` when the side fits in a tile."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def tile_grid(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """The tiles of an ``height x width`` image as ``(top, left, tile_h, tile_w)``, row by row.

    The stride is ``max(1, round(tile * (1 - overlap)))``; along each side the tiles start at
    multiples of the stride below ``side - tile`` and the last one at ``side - tile``, flush with the
    border, so every pixel is covered (neighbours overlap by at least ``tile - stride`` pixels). A
    side no longer than ``tile`` is not cut: its tiles span it whole (``tile_h = height`` or
    ``tile_w = width``), so an image no larger than ``tile`` on either side is one tile, itself.
    ``ValueError`` for a tile below 1 or an overlap outside ``[0, 1)``."""
    if isinstance(tile, bool) or int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a whole number of pixels >= 1, got {tile!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    tile = int(tile)
    stride = max(1, int(round(tile * (1.0 - float(overlap)))))
    th, tw = min(tile, height), min(tile, width)
    return [(top, left, th, tw) for top in _positions(height, tile, stride) for left in _positions(width, tile, stride)]


def stitch(maps, grid, height: int, width: int) -> np.ndarray:
    """One ``height x width`` float32 map from per-tile maps (each at its tile's size, ``grid`` as
    :func:`tile_grid`): every pixel is the mean of the maps of the tiles that cover it (the sum of
    the tile maps over a weight map counting the tiles on each pixel). ``ValueError`` when a map's
    size is not its tile's or a pixel is left uncovered."""
    total = np.zeros((height, width), dtype=np.float64)
    weight = np.zeros((height, width), dtype=np.float64)
    for amap, (top, left, th, tw) in zip(maps, grid, strict=True):
        amap = np.asarray(amap)
        if amap.shape != (th, tw):
            raise ValueError(f"tile map at ({top}, {left}) has shape {amap.shape}, expected {(th, tw)}")
        total[top : top + th, left : left + tw] += amap
        weight[top : top + th, left : left + tw] += 1.0
    if not (weight > 0).all():
        raise ValueError("the tiles do not cover the image")
    return (total / weight).astype(np.float32)


def predict_tiled(
    model, images, *, tile: int, overlap: float = 0.25, device=None, progress: bool = False, transform=None
):
    """Tiled :meth:`~adlib.models.core.Method.predict_images` for images larger than the model's
    input: ``images`` as there (paths, PIL images, ``H x W x 3`` / ``H x W`` uint8 arrays).

    Each image is cut by :func:`tile_grid` (``tile`` in the image's own pixels, ``overlap`` the
    fraction neighbours share); every tile goes through ``model.predict_images`` as an image of its
    own (the model's ``transform``, or ``transform``, resizes it), which returns its map at the
    tile's size; the maps are stitched to the image's size by :func:`stitch` (the mean where tiles
    overlap). The image score is the maximum of its tiles' scores: a method's image score is defined
    for the whole image it sees, not for a set of tiles. An image no larger than ``tile`` is one tile,
    scored as by ``predict_images``. Returns :class:`~adlib.models.core.ImagePredictions`."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .data.base import open_image
    from .models.core import ImagePredictions

    images = list(images)
    if not images:
        raise ValueError("predict_tiled: no images given")
    tile_grid(1, 1, tile, overlap)  # check tile and overlap before reading anything
    names, scores, maps = [], [], []
    for i, im in enumerate(tqdm(images, desc="tiled predict", disable=not progress, leave=False)):
        if isinstance(im, (str, os.PathLike)):
            name, img = str(im), open_image(Path(im))
        elif isinstance(im, Image.Image):
            name, img = f"<image {i}>", im
        elif isinstance(im, np.ndarray):
            if not (im.dtype == np.uint8 and (im.ndim == 2 or (im.ndim == 3 and im.shape[2] == 3))):
                raise ValueError(
                    f"image {i}: an array must be H x W x 3 (or H x W) uint8, got shape {im.shape} dtype {im.dtype}"
                )
            name, img = f"<array {i}>", Image.fromarray(im)
        else:
            raise ValueError(f"image {i}: expected a path, a PIL image or a uint8 array, got {type(im).__name__}")
        width, height = img.size
        grid = tile_grid(height, width, tile, overlap)
        crops = [img.crop((left, top, left + tw, top + th)) for top, left, th, tw in grid]
        pred = model.predict_images(crops, device=device, progress=False, transform=transform)
        names.append(name)
        scores.append(float(np.max(pred.scores)))
        maps.append(stitch(pred.maps, grid, height, width))
        log.debug("%s: %d x %d in %d tile(s) of %d", name, width, height, len(grid), tile)
    return ImagePredictions(paths=names, scores=np.asarray(scores, dtype=np.float64), maps=maps)


@dataclass
class PredictResult:
    """What :func:`predict_folder` did: the output folder, the images' paths, scores and
    decisions (None without a threshold), the threshold (a :class:`~adlib.thresholds.Threshold`,
    the float given, or None) and its rule (``"given"``, the Threshold's, ``""`` for none)."""

    out: Path
    paths: list[str]
    scores: np.ndarray
    decisions: np.ndarray | None
    threshold: object | None
    rule: str = ""


def predict_folder(
    run,
    inputs,
    *,
    out=None,
    threshold: float | None = None,
    normal=None,
    quantile: float | None = None,
    npy: bool = False,
    overlays: bool = True,
    device=None,
    progress: bool = True,
    tile: int | None = None,
    overlap: float | None = None,
    fast=None,
) -> PredictResult:
    """``adlib predict`` (module docstring): load ``run/model.pt``, score the images of ``inputs``,
    choose the threshold and write ``scores.csv``, overlays and maps to ``out``. With ``tile``,
    every image (the ``normal`` ones too) is scored tiled (:func:`predict_tiled`, ``overlap``,
    default 0.25; ``overlap`` without ``tile`` is refused). ``fast``: the fast paths to score on
    (:mod:`adlib.fastpath`, e.g. ``"bf16,channels-last"``; None: those the model was trained with)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .models import load
    from .thresholds import Threshold, decide, from_normal

    run = Path(run)
    model_path = run / "model.pt"
    if not model_path.is_file():
        raise FileNotFoundError(f"no trained model: {model_path} not found (train one with `adlib train`)")
    if threshold is not None and normal is not None:
        raise ValueError("give either --threshold or --normal, not both")
    if quantile is not None and normal is None and threshold is not None:
        raise ValueError("--quantile goes with --normal DIR or a --calibration run, not with --threshold")
    if quantile is not None and normal is None and not (run / CALIBRATION_FILE).is_file():
        raise ValueError(
            f"--quantile goes with --normal DIR (the held-out normal images it is taken over) or a run "
            f"trained with --calibration (no {run / CALIBRATION_FILE})"
        )
    if tile is None and overlap is not None:
        raise ValueError("--overlap goes with --tile T (the tiles it is the overlap of)")
    overlap = 0.25 if overlap is None else overlap
    if tile is not None:
        tile_grid(1, 1, tile, overlap)  # --tile / --overlap checked before any work
    if fast is not None:
        from .fastpath import parse

        fast = parse(fast, "--fast")  # checked before any work
    images = collect_images(inputs)
    normal_images = collect_images([normal]) if normal is not None else []
    model = load(model_path)
    if fast is not None:
        model.set_fast(fast)
    log.info("scoring on the %s path", model.speed.label)
    transform = run_transform(run, model)
    log.info("%s: %s from %s on %d image(s)", "predict", model.label, model_path, len(images))
    if tile is not None:
        log.info("tiled: tiles of %d pixels, overlap %g; image score = max over tiles", tile, overlap)

    def score(paths):
        if tile is None:
            return model.predict_images(paths, device=device, progress=progress, transform=transform)
        return predict_tiled(
            model, paths, tile=tile, overlap=overlap, device=device, progress=progress, transform=transform
        )

    thr = None  # a Threshold (chosen on normal images or stored), or the value given
    if threshold is not None:
        value = float(threshold)
        if not np.isfinite(value):
            raise ValueError(f"--threshold must be a finite number, got {threshold!r}")
        thr, rule = value, "given"
        log.info("threshold %.6g as given", value)
    elif normal is not None:
        normal_pred = score([p for p, _ in normal_images])
        thr = from_normal(normal_pred.scores, 0.99 if quantile is None else quantile)
        thr = Threshold(thr.value, thr.rule, thr.level, {**thr.params, "normal": str(normal)}, thr.n_normal, 0)
        atomic_write_json(run / THRESHOLD_FILE, thr.as_dict())
        log.info(
            "threshold %.6g: quantile %s of %d normal image(s) in %s, written to %s",
            thr.value,
            thr.params["quantile"],
            thr.n_normal,
            normal,
            run / THRESHOLD_FILE,
        )
    elif quantile is not None:  # a calibration run: the stored held-out scores at another quantile
        thr = recalibrate(run, quantile)
        log.info(
            "threshold %.6g: quantile %s of the run's %d held-out normal image(s)", thr.value, quantile, thr.n_normal
        )
    else:
        thr = read_threshold(run)
        if thr is None:
            log.info(
                "no threshold (no --threshold, no --normal, no %s): the decision column is left empty",
                run / THRESHOLD_FILE,
            )
        else:
            log.info("threshold %.6g from %s (%s)", thr.value, run / THRESHOLD_FILE, thr.rule)

    pred = score([p for p, _ in images])
    decisions = decide(pred.scores, thr) if thr is not None else None
    if isinstance(thr, Threshold):
        value, rule = thr.value, thr.rule
    elif thr is None:
        value, rule = None, ""

    out = Path(out) if out is not None else run / "predict"
    out.mkdir(parents=True, exist_ok=True)
    names = output_names([rel for _, rel in images])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "score", "decision", "threshold", "rule"])
    for i, (p, _) in enumerate(images):
        dec = "" if decisions is None else ("anomalous" if decisions[i] else "normal")
        w.writerow([str(p), repr(float(pred.scores[i])), dec, "" if value is None else repr(value), rule])
    atomic_write_text(out / "scores.csv", buf.getvalue())
    if overlays or npy:
        lo = float(min(m.min() for m in pred.maps))
        hi = float(max(m.max() for m in pred.maps))
        for i in tqdm(range(len(images)), desc="writing overlays and maps", disable=not progress, leave=False):
            if overlays:
                png = io.BytesIO()
                Image.fromarray(overlay_image(images[i][0], pred.maps[i], lo, hi)).save(png, format="PNG")
                _atomic_write_bytes(out / "overlays" / f"{names[i]}.png", png.getvalue())
            if npy:
                arr = io.BytesIO()
                np.save(arr, pred.maps[i].astype(np.float32))
                _atomic_write_bytes(out / "maps" / f"{names[i]}.npy", arr.getvalue())
    log.info("scores of %d image(s) written to %s", len(images), out / "scores.csv")
    return PredictResult(out, [str(p) for p, _ in images], pred.scores, decisions, thr, rule)


__all__ = [
    "CALIBRATION_FILE",
    "THRESHOLD_FILE",
    "PredictResult",
    "collect_images",
    "output_names",
    "predict_folder",
    "predict_tiled",
    "read_threshold",
    "recalibrate",
    "run_transform",
    "stitch",
    "tile_grid",
]
