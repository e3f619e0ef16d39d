"""ADL training-set contamination: test anomalies hidden among the normal training images.

ADL (WACV 2025), Sec. 4 "Experimental setup": the training set is "corrupted with anomalies, i.e. an
eps fraction (contamination ratio) of the available training data is anomalies, disguised as
normal data"; since MVTec AD and VisA have no training anomalies, anomalies are sampled from the
test set and "zero-mean Gaussian noise with a relatively large variance" is added to them.

What ``eps`` means. ``eps`` is the fraction of anomalies in the *contaminated* training set
(Sec. 3.1: "a fraction eps of the data is outliers"). With ``N`` normal training images the
released code (github anindyasdas/ADL4VAD, ``datasets/mvtecad_perlintest.py``) adds
``int(eps / (1 - eps) * N)`` anomalies (:func:`contamination_count`), so that
``k / (N + k) ~= eps`` (truncated down). ``eps`` must lie in ``[0, 1)``.

Protocols (named options; :data:`PROTOCOLS`)
    - ``"leak-free"`` (default, the honest default the implementation notes name): the
      contaminating anomalies are removed from the test set, so no image is both trained on and
      evaluated.
    - ``"released"``: the released code keeps every test anomaly in the test set (the contaminating
      ones are evaluated after being trained on as "normal": leakage).

Choice of anomalies. Uniformly at random without replacement over all test anomalies of all defect
types together (no stratification; the released code draws ``np.random.choice(..., replace=False)``
over the pooled, shuffled list). The candidates are first sorted by image path so the choice
depends only on the seed and the set of records, not on their order (the released code starts
from ``os.listdir`` order, which is file-system dependent).

When a class has too few anomalies (:func:`draw_plan`, used by :func:`contaminate`; the outcome is
recorded: ``n_contaminating``, ``n_available``, ``with_replacement``, ``n_distinct``)
    - ``"released"``: as the released code (``datasets/mvtecad_perlintest.py`` and
      ``visa_perlintest.py``, ``synthetic_contamination``: ``np.random.choice(..., replace=False)``
      in a ``try``, ``replace=True`` in its ``except``), the ``k`` anomalies are drawn **with
      replacement** when ``k`` exceeds the test set's anomalies (duplicates, each with its own
      noise draw, as the released code adds noise per copy); without replacement otherwise. Only
      an empty anomaly set is an error. On the real class sizes (table in
      ``tests/test_synthesis_confetti_contamination.py``): MVTec AD at eps 20 % draws with
      replacement on grid, hazelnut, transistor and wood; VisA at 15 % on the 7 classes with at
      least 900 normal training images, at 20 % on all 12.
    - ``"leak-free"``: the ``k`` drawn anomalies leave the test set, so the draw needs ``k`` plus
      at least :data:`LEAK_FREE_MIN_LEFT` (1) anomaly left for testing (otherwise AUROC is
      undefined). Short of that, one :class:`ContaminationError` line naming the class (when
      given), eps, the count needed and the count available; no fallback (sampling with
      replacement cannot help: every drawn image leaves the test set). E.g. VisA at 10 % needs
      ``int(900 / 9) = 100`` anomalies for the 7 large classes, all 100 of their test anomalies.
    - ``on_shortage`` overrides the protocol's rule: ``"raise"`` (also under ``"released"``) or
      ``"with_replacement"`` (refused under ``"leak-free"``).

How contaminating records look. Each chosen test record becomes a :class:`ContaminatedRecord` in
the training list: ``label=0``, ``defect_type="good"``, ``mask_path=None``, ``split="train"``
(what training sees: an unlabelled "normal" image; no mask, so the defect mask cannot leak into
training), with the truth kept in ``true_label`` (1), ``true_defect_type``, ``true_mask_path``
and ``source_split``. They are appended after the normal records, as in the released code.

Noise (:func:`add_contamination_noise`). Released code, applied once per contaminating image after
it is resized to the training size (cv2 bilinear) and before it is stored:
``x + N(0, 2^2)`` on the 0-255 scale, then a per-image *min-max rescale* to [0, 255], truncation
to uint8 (``astype``), and storage as JPEG (``cv2.imwrite``, quality 95). The noise is drawn once
per run, not per epoch. Offered as ``range_mode="minmax"`` (default, released) or ``"clamp"``
(clip to [0, 255] after rounding: noise only, no contrast stretch), and ``jpeg_quality=95``
(released) or ``None`` (no JPEG round trip). The JPEG round trip uses Pillow's libjpeg with its
default 4:2:0 chroma subsampling, which can differ from OpenCV's encoder by a few grey levels.
:class:`ContaminatedSplit` carries one noise seed per contaminating image so a dataset can apply
the noise deterministically once per image.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from adlib.data.base import Record

log = logging.getLogger(__name__)

PROTOCOLS = ("leak-free", "released")
DEFAULT_PROTOCOL = "leak-free"
SHORTAGE_MODES = ("raise", "with_replacement")
#: the shortage rule of each protocol (module docstring)
SHORTAGE_BY_PROTOCOL = {"leak-free": "raise", "released": "with_replacement"}
#: anomalies a leak-free draw must leave in the test set
LEAK_FREE_MIN_LEFT = 1
RANGE_MODES = ("minmax", "clamp")
NOISE_STD = 2.0
RELEASED_JPEG_QUALITY = 95


class ContaminationError(ValueError):
    """A contamination request that cannot be met (bad ratio, too few anomalies, labelled train set)."""


@dataclass(frozen=True)
class ContaminatedRecord(Record):
    """A test anomaly presented to training as an unlabelled normal image; the truth is kept aside."""

    true_label: int = 1
    true_defect_type: str = ""
    true_mask_path: Path | None = None
    source_split: str = "test"


@dataclass
class ContaminatedSplit:
    """Result of :func:`contaminate`.

    ``train``: the normal training records followed by the contaminating
    :class:`ContaminatedRecord` s; ``test``: the evaluation records (without the contaminating
    anomalies under ``"leak-free"``, unchanged under ``"released"``); ``chosen``: the original test
    records chosen, in draw order; ``noise_seeds``: one seed per chosen record (same order) for
    :func:`add_contamination_noise`.
    """

    train: list[Record]
    test: list[Record]
    chosen: list[Record]
    protocol: str
    eps: float
    n_normal_train: int
    noise_std: float = NOISE_STD
    noise_seeds: list[int] = field(default_factory=list)
    n_available: int = 0  # anomalies in the test set to draw from
    with_replacement: bool = False  # the released fallback was used (duplicates possible)

    @property
    def chosen_files(self) -> list[Path]:
        return [Path(r.image_path) for r in self.chosen]

    @property
    def n_contaminating(self) -> int:
        return len(self.chosen)

    @property
    def n_distinct(self) -> int:
        """Number of distinct anomalies drawn (less than :attr:`n_contaminating` only with replacement)."""
        return len({str(r.image_path) for r in self.chosen})

    @property
    def leaked(self) -> bool:
        """Whether any contaminating image is also in the test set (True under ``"released"``)."""
        test_paths = {Path(r.image_path) for r in self.test}
        return any(p in test_paths for p in self.chosen_files)


def contamination_count(eps: float, n_train: int) -> int:
    """Number of anomalies added to ``n_train`` normal training images: ``int(eps / (1 - eps) * n_train)``.

    ADL released code (``datasets/mvtecad_perlintest.py``); ``eps`` is the fraction of anomalies in
    the contaminated training set (ADL Sec. 3.1), so ``k / (n_train + k) ~= eps`` with ``k``
    truncated down. E.g. ``eps = 0.1, n = 100 -> 11``; ``eps = 0.2, n = 209 -> 52``.
    Raises :class:`ContaminationError` (a ``ValueError``) unless ``0 <= eps < 1`` and ``n_train >= 0``.
    """
    try:
        e = float(eps)
    except (TypeError, ValueError) as exc:
        raise ContaminationError(f"contamination ratio eps must be a number in [0, 1), got {eps!r}") from exc
    if math.isnan(e) or not 0.0 <= e < 1.0:
        raise ContaminationError(f"contamination ratio eps must be in [0, 1), got {eps!r}")
    if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 0:
        raise ContaminationError(f"n_train must be a non-negative integer, got {n_train!r}")
    return int(e / (1.0 - e) * int(n_train))


@dataclass(frozen=True)
class DrawPlan:
    """What a contamination draw does for given counts (:func:`draw_plan`)."""

    n_contaminating: int  # k = contamination_count(eps, n_normal)
    n_available: int  # anomalies in the test set
    with_replacement: bool  # k > n_available under the released rule
    test_anomalies_left: int  # anomalies left in the test set (leak-free: at least available - k)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def draw_plan(
    eps: float,
    n_normal: int,
    n_available: int,
    protocol: str = DEFAULT_PROTOCOL,
    on_shortage: str | None = None,
    where: str = "",
) -> DrawPlan:
    """The contamination draw for ``n_normal`` normal training images and ``n_available`` test
    anomalies (module docstring, "When a class has too few anomalies"): ``k =
    contamination_count(eps, n_normal)``; ``"released"`` draws with replacement when ``k >
    n_available``; ``"leak-free"`` needs ``k + LEAK_FREE_MIN_LEFT`` anomalies and otherwise raises
    :class:`ContaminationError` naming ``where`` (e.g. ``"visa/candle"``), eps, the count needed
    and the count available. ``on_shortage`` (None: the protocol's rule, :data:`SHORTAGE_BY_PROTOCOL`)
    may force ``"raise"``. Used by :func:`contaminate`; needs no records (tests on real class sizes)."""
    if protocol not in PROTOCOLS:
        raise ContaminationError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    rule = SHORTAGE_BY_PROTOCOL[protocol] if on_shortage is None else on_shortage
    if rule not in SHORTAGE_MODES:
        raise ContaminationError(f"on_shortage must be one of {SHORTAGE_MODES} or None, got {on_shortage!r}")
    if protocol == "leak-free" and rule == "with_replacement":
        raise ContaminationError(
            "on_shortage='with_replacement' is not allowed under the leak-free protocol "
            "(every drawn anomaly leaves the test set); use contamination_protocol='released'"
        )
    k = contamination_count(eps, n_normal)
    avail = int(n_available)
    prefix = f"{where}: " if where else ""
    if k == 0:
        return DrawPlan(0, avail, False, avail)
    if protocol == "leak-free":
        need = k + LEAK_FREE_MIN_LEFT
        if avail < need:
            raise ContaminationError(
                f"{prefix}leak-free contamination at eps={eps:g} needs {need} test anomalies ({k} to hide among "
                f"{n_normal} normal training images + {LEAK_FREE_MIN_LEFT} left to test), "
                f"but only {avail} are available; use a lower eps or contamination_protocol='released'"
            )
        return DrawPlan(k, avail, False, avail - k)
    if k > avail and (rule == "raise" or avail == 0):
        raise ContaminationError(
            f"{prefix}eps={eps:g} with {n_normal} normal training images needs {k} anomalies, "
            f"but the test set has only {avail}"
        )
    return DrawPlan(k, avail, k > avail, avail)


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ContaminationError("contaminate needs a seed or a numpy Generator (no global RNG)")
    return np.random.default_rng(seed)


def _as_contaminating(rec: Record) -> ContaminatedRecord:
    base = {f.name: getattr(rec, f.name) for f in fields(Record)}
    c = ContaminatedRecord(
        **base,
        true_label=int(rec.label),
        true_defect_type=rec.defect_type,
        true_mask_path=rec.mask_path,
        source_split=rec.split or "test",
    )
    return replace(c, label=0, defect_type="good", mask_path=None, split="train", mask_known=True)


def contaminate(
    train_records: list[Record],
    test_records: list[Record],
    eps: float,
    seed: int | np.random.Generator | None,
    protocol: str = DEFAULT_PROTOCOL,
    noise_std: float = NOISE_STD,
    on_shortage: str | None = None,
    where: str = "",
) -> ContaminatedSplit:
    """Contaminate ``train_records`` with ``contamination_count(eps, len(train_records))`` test anomalies.

    ADL Sec. 4 (experimental setup) with the released count formula (:func:`contamination_count`).
    The anomalies (``label == 1`` test records) are chosen uniformly across defect types with
    ``seed`` (int or ``numpy.random.Generator``), after sorting by image path; without
    replacement, except under ``"released"`` when the test set has fewer than needed (released
    fallback: with replacement). ``protocol``: ``"leak-free"`` (default: removed from the test
    set; raises when fewer than ``k + 1`` anomalies exist) or ``"released"`` (kept in the test
    set). ``on_shortage``: None (the protocol's rule), ``"raise"`` or ``"with_replacement"``
    (see :func:`draw_plan`); ``where`` names the class in errors. Every training record must be
    normal (``label == 0``). The inputs are not modified. See the module docstring.
    """
    if protocol not in PROTOCOLS:
        raise ContaminationError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    bad = [r for r in train_records if int(r.label) != 0]
    if bad:
        raise ContaminationError(
            f"training records must all be normal (label 0); {len(bad)} are not, e.g. {bad[0].image_path}"
        )
    n_normal = len(train_records)
    anomalies = sorted((r for r in test_records if int(r.label) == 1), key=lambda r: str(r.image_path))
    if len({str(r.image_path) for r in anomalies}) != len(anomalies):
        raise ContaminationError("test records contain duplicate anomalous image paths")
    plan = draw_plan(eps, n_normal, len(anomalies), protocol, on_shortage, where)
    k = plan.n_contaminating
    rng = _rng(seed)
    if plan.with_replacement:
        log.warning(
            "contaminate%s: %d anomalies needed, %d available; sampling with replacement (released protocol)",
            f" {where}" if where else "",
            k,
            len(anomalies),
        )
    idx = rng.choice(len(anomalies), size=k, replace=plan.with_replacement) if k else np.zeros(0, dtype=np.int64)
    chosen = [anomalies[int(i)] for i in idx]
    seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=k)] if k else []
    train = list(train_records) + [_as_contaminating(r) for r in chosen]
    if protocol == "leak-free":
        gone = {str(r.image_path) for r in chosen}
        test = [r for r in test_records if not (int(r.label) == 1 and str(r.image_path) in gone)]
    else:
        test = list(test_records)
    log.info(
        "contaminate: eps=%s, %d normal + %d anomalies (%.3f of train), protocol=%s, test %d -> %d",
        eps,
        n_normal,
        k,
        k / max(n_normal + k, 1),
        protocol,
        len(test_records),
        len(test),
    )
    return ContaminatedSplit(
        train,
        test,
        chosen,
        protocol,
        float(eps),
        n_normal,
        float(noise_std),
        seeds,
        n_available=len(anomalies),
        with_replacement=plan.with_replacement,
    )


def _normal(shape, generator) -> np.ndarray:
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float64).numpy()
    if isinstance(generator, np.random.Generator):
        return generator.standard_normal(shape)
    raise TypeError(f"generator must be a torch.Generator or numpy.random.Generator, got {type(generator).__name__}")


def _jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    squeeze = img.ndim == 3 and img.shape[2] == 1
    pil = Image.fromarray(img[..., 0] if squeeze else img)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert(pil.mode)).copy()
    return out[..., None] if squeeze else out


def add_contamination_noise(
    image_uint8: np.ndarray | torch.Tensor,
    generator: torch.Generator | np.random.Generator,
    std: float = NOISE_STD,
    range_mode: str = "minmax",
    jpeg_quality: int | None = RELEASED_JPEG_QUALITY,
) -> np.ndarray | torch.Tensor:
    """Gaussian noise of ``std`` (0-255 scale) on a contaminating uint8 image, as the ADL release does.

    ADL Sec. 4 ("zero-mean Gaussian noise with a relatively large variance"); released code: std 2.0,
    then ``range_mode="minmax"`` (default: per-image rescale ``(y - min) * 255 / (max - min)``,
    truncated to uint8) or ``"clamp"`` (round, clip to [0, 255]); then a JPEG round trip at
    ``jpeg_quality`` (released 95; ``None`` skips it). Shape-agnostic (``H x W``, ``H x W x C``
    numpy or any tensor layout; the JPEG round trip needs numpy ``H x W [x 1|3]``, tensors
    ``C x H x W`` are transposed for it). Returns the input's type.
    """
    if range_mode not in RANGE_MODES:
        raise ValueError(f"range_mode must be one of {RANGE_MODES}, got {range_mode!r}")
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    is_tensor = isinstance(image_uint8, torch.Tensor)
    arr = image_uint8.detach().cpu().numpy() if is_tensor else np.asarray(image_uint8)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    y = arr.astype(np.float64) + _normal(arr.shape, generator) * std
    if range_mode == "minmax":
        lo, hi = float(y.min()), float(y.max())
        if hi > lo:
            out = ((y - lo) * 255.0 / (hi - lo)).astype(np.uint8)
        else:
            out = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    else:
        out = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        if is_tensor and out.ndim == 3 and out.shape[0] in (1, 3):
            out = _jpeg_roundtrip(np.ascontiguousarray(out.transpose(1, 2, 0)), jpeg_quality).transpose(2, 0, 1)
        elif out.ndim == 2 or (out.ndim == 3 and out.shape[2] in (1, 3)):
            out = _jpeg_roundtrip(out, jpeg_quality)
        else:
            raise ValueError(f"JPEG round trip needs an H x W [x 1|3] image, got shape {arr.shape}")
    if is_tensor:
        return torch.from_numpy(np.ascontiguousarray(out)).to(image_uint8.device)
    return out


__all__ = [
    "DEFAULT_PROTOCOL",
    "LEAK_FREE_MIN_LEFT",
    "SHORTAGE_BY_PROTOCOL",
    "DrawPlan",
    "draw_plan",
    "NOISE_STD",
    "PROTOCOLS",
    "RANGE_MODES",
    "RELEASED_JPEG_QUALITY",
    "SHORTAGE_MODES",
    "ContaminatedRecord",
    "ContaminatedSplit",
    "ContaminationError",
    "add_contamination_noise",
    "contaminate",
    "contamination_count",
]
