"""What every method shares: a registry, one prediction structure, one evaluation.

A method is a class registered under a name with :func:`register`, with its variants as names of
their own (``glass-m``, ``adl-wt-dl``: :data:`NAMES`, the results' labels and what ``adlib train``
accepts, with the tables' display names); :func:`build` makes one from a name, a profile and
overrides of its config dataclass::

    model = build("glass-m", profile="smoke", epochs=2)   # = build("glass", variant="m", epochs=2)
    model.fit(train_ds)                  # an AnomalyDataset of normal images
    pred = model.predict(test_ds)        # a Prediction
    metrics = evaluate(pred)             # image/pixel AUROC, AP, AU-PRO

Every method class has:

- ``Config``: a dataclass with the method's settings; ``Config.for_profile(profile, **overrides)``
  gives the profile's defaults (``smoke``: CPU-sized; ``paper``: the paper's settings);
- ``fit(train_ds, *, device=None, progress=True, checkpoint_dir=None) -> self``;
- ``predict(test_ds, *, device=None, batch_size=None, progress=True) -> Prediction``;
- ``info() -> dict``: name, variant, config and the backbone weights used (recorded with results).

The lifecycle those share (config validation and profiles, seeding, the epoch loop with atomic
checkpoints and exact resume, save/load, ``to(device)``, ``info()``) is implemented once in
:mod:`adlib.models.core`; the image-score formulas in :mod:`adlib.models.scores`.

Maps in a :class:`Prediction` are at the resolution of the masks the dataset returns (the model
input size after its transform), already up-sampled and smoothed as the method prescribes.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import difflib
import functools
import hashlib
import logging
import os
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import metrics

log = logging.getLogger(__name__)

MODELS: dict[str, type] = {}


@dataclass(frozen=True)
class RegisteredName:
    """One name of the registry (:data:`NAMES`): a method, or one variant of it (``glass-m``).

    ``name`` is also the results' label (:attr:`adlib.results.Job.label`) and what ``adlib train``
    accepts; ``display`` is how the tables name it."""

    name: str
    method: str
    variant: str | None
    display: str

    @property
    def overrides(self) -> dict[str, Any]:
        """The config overrides that select it (``{"variant": ...}`` for a variant)."""
        return {} if self.variant is None else {"variant": self.variant}


#: every registry name: each method, and ``<method>-<variant>`` for each declared variant
NAMES: dict[str, RegisteredName] = {}


def register(name: str, display: str | None = None, variants: dict[str, str] | None = None) -> Callable[[type], type]:
    """Class decorator adding a method to :data:`MODELS` under ``name``, and to :data:`NAMES` with
    its display name and its variants (``{variant: display name}``, each registered as
    ``<name>-<variant>``; the bare name then means the config's default variant)."""

    def deco(cls: type) -> type:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        MODELS[name] = cls
        NAMES[name] = RegisteredName(name, name, None, display or name)
        for v, shown in (variants or {}).items():
            NAMES[f"{name}-{v}"] = RegisteredName(f"{name}-{v}", name, v, shown)
        return cls

    return deco


def resolve_name(name: str) -> RegisteredName:
    """The registry entry of a method or variant name (``glass``, ``glass-m``, ``adl-wt-dl``);
    ``ValueError`` listing the names otherwise."""
    _load_all()
    if name not in NAMES:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(NAMES))}")
    return NAMES[name]


def display_name(label: str) -> str:
    """How the tables name a results label (a registry name), e.g. ``glass-m`` -> ``GLASS-m``;
    an unknown label is returned unchanged."""
    _load_all()
    entry = NAMES.get(label)
    return entry.display if entry is not None else label


def method_and_overrides(name: str, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, overrides)`` for a registry name: a variant name adds its ``variant`` (an explicit
    different ``variant`` override is refused, naming both)."""
    entry = resolve_name(name)
    if entry.variant is None:
        return entry.method, dict(overrides)
    given = overrides.get("variant")
    if given is not None and given != entry.variant:
        raise ValueError(f"{name!r} is variant {entry.variant!r} of {entry.method!r}, but variant={given!r} was given")
    return entry.method, {**overrides, "variant": entry.variant}


#: modules under adlib.models that register methods when imported
METHOD_MODULES = ("glass", "patchcore", "pouta", "adl", "adtr", "draem")


def _load_all() -> None:
    """Import the method modules (importing registers them); a module not written yet is skipped."""
    import importlib

    for mod in METHOD_MODULES:
        full = f"{__package__}.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            log.debug("method module %s not present", full)


def available_models() -> list[str]:
    _load_all()
    return sorted(MODELS)


def available_names() -> list[str]:
    """Every registry name: methods and their variants (``glass``, ``glass-h``, ``glass-j``, ...)."""
    _load_all()
    return sorted(NAMES)


def build(name: str, profile: str = "smoke", **overrides: Any):
    """A method by registry name (a method, or a variant such as ``glass-m``) with its profile's
    config, ``overrides`` replacing config fields."""
    method, overrides = method_and_overrides(name, overrides)
    cls = MODELS[method]
    cfg = cls.Config.for_profile(profile, **overrides)
    return cls(cfg)


def _unknown_fields_message(cfg_cls: type, bad: list[str], names: set[str]) -> str:
    close = {b: difflib.get_close_matches(b, sorted(names), n=3, cutoff=0.6) for b in bad}
    hints = "; ".join(f"{b!r}: did you mean {', '.join(map(repr, c))}?" for b, c in close.items() if c)
    return (
        f"unknown {cfg_cls.__qualname__} field(s) {bad}"
        + (f" ({hints})" if hints else "")
        + f"; known: {sorted(names)}"
    )


def config_overrides(cfg_cls: type, profile_defaults: dict, overrides: dict) -> dict:
    """Merge profile defaults and overrides, rejecting names that are not config fields (the
    error lists the close ones) and values of the wrong kind for their field's declared type
    (:func:`check_field_value`: a string for a boolean, 1.5 for an integer, ...)."""
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(_unknown_fields_message(cfg_cls, bad, names))
    for key, value in overrides.items():
        check_field_value(cfg_cls, key, value)
    return {**profile_defaults, **overrides}


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@functools.cache
def _field_types(cfg_cls: type) -> dict[str, Any]:
    """The declared types of a config class's fields (resolved once per class)."""
    return typing.get_type_hints(cfg_cls)


def _alternatives(hint: Any) -> tuple[Any, ...]:
    """``int | None`` -> ``(int, NoneType)``; a plain type -> ``(type,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _describe(hint: Any) -> str:
    alts = _alternatives(hint)
    if len(alts) > 1:
        return " or ".join(_describe(a) for a in alts)
    if hint is type(None):
        return "None"
    if hint is bool:
        return "a boolean (" + "/".join(f"{t}/{f}" for t, f in zip(_TRUE, _FALSE)) + ")"
    origin = typing.get_origin(hint)
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = _describe(args[0]) if args else "values"
        return f"a comma-separated list of {inner}"
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(hint: Any, value: Any, text: bool) -> Any:
    """``value`` as ``hint`` (``text``: it came from a command line); ``ValueError`` if it is not one."""
    alts = _alternatives(hint)
    if text:  # from a command line everything is text: try the other readings before a string
        alts = tuple(a for a in alts if a is not str) + tuple(a for a in alts if a is str)
    for alt in alts:
        try:
            return _coerce_one(alt, value, text)
        except (ValueError, TypeError):
            continue
    raise ValueError(_describe(hint))


def _coerce_one(hint: Any, value: Any, text: bool) -> Any:
    if hint is Any:
        return _literal(value) if text else value
    if hint is type(None):
        if value is None or (text and str(value).strip().lower() == "none"):
            return None
        raise ValueError
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        v = _literal(value) if text else value
        if v in typing.get_args(hint):
            return v
        raise ValueError
    if hint is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if text and str(value).strip().lower() in _TRUE + _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ValueError
    if hint is int:
        if isinstance(value, (bool, np.bool_)):
            raise ValueError
        if isinstance(value, (int, np.integer)):
            return int(value)
        if text:
            return int(str(value).strip())
        raise ValueError
    if hint is float:
        if isinstance(value, (bool, np.bool_)):
            raise ValueError
        if isinstance(value, (int, float, np.integer, np.floating)):
            return float(value)
        if text:
            return float(str(value).strip())
        raise ValueError
    if hint is str:
        if isinstance(value, str):
            return value.strip() if text else value
        if not text and isinstance(value, os.PathLike):  # paths for path fields
            return value
        raise ValueError
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis] or [Any]
        if text and isinstance(value, str):
            v = _literal(value)
            items = list(v) if isinstance(v, (list, tuple)) else [p for p in value.split(",") if p.strip()]
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = list(value)
        else:
            raise ValueError
        homogeneous = len(args) == 1 or Ellipsis in typing.get_args(hint)
        if not homogeneous and len(items) != len(args):
            raise ValueError
        out = [_coerce(args[0] if homogeneous else a, x, text) for x, a in zip(items, args * len(items))]
        return tuple(out) if origin is not list else out
    return _literal(value) if text else value  # other annotations (dicts, classes): as given


def _literal(value: Any) -> Any:
    """A Python literal from command-line text, else the text itself."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return value.strip()


def check_field_value(cfg_cls: type, key: str, value: Any) -> None:
    """Refuse a value of the wrong kind for the declared type of ``cfg_cls.key`` (typed Python
    values: no text parsing), naming the field and what it accepts."""
    hint = _field_types(cfg_cls).get(key, Any)
    try:
        _coerce(hint, value, text=False)
    except ValueError:
        raise ValueError(f"{cfg_cls.__qualname__}.{key} = {value!r}: expected {_describe(hint)}") from None


def parse_field_value(cfg_cls: type, key: str, text: str) -> Any:
    """Command-line text (``--set key=text``) as the declared type of ``cfg_cls.key``: booleans
    from true/false, yes/no, on/off, 1/0; integers refuse ``1.5``; a tuple field takes a
    comma-separated list (``layers=layer2,layer3``) or a Python literal; ``None`` where the field
    allows it. An unknown key lists the close ones. ``ValueError`` names the key and what it accepts."""
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    if key not in names:
        raise ValueError(_unknown_fields_message(cfg_cls, [key], names))
    hint = _field_types(cfg_cls).get(key, Any)
    try:
        return _coerce(hint, text, text=True)
    except ValueError:
        raise ValueError(f"--set {key}={text}: {key} expects {_describe(hint)}") from None


@dataclass
class Prediction:
    """Scores of one test set: ``image_scores`` (N,), ``maps`` (N, H, W) float32, with the
    ground truth they are compared to: ``labels`` (N,), ``masks`` (N, H, W) uint8 {0, 1}.

    ``mask_known`` (N,) bool: whether each image's mask is known; False for an anomalous image
    shipped without a mask (its ``masks`` entry is all zeros and :func:`evaluate` leaves it out of
    the pixel metrics). None (the default) means every mask is known."""

    image_scores: np.ndarray
    maps: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    paths: list[str] = field(default_factory=list)
    defect_types: list[str] = field(default_factory=list)
    mask_known: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.image_scores)
        if not (len(self.maps) == len(self.labels) == len(self.masks) == n):
            raise ValueError(
                f"prediction parts differ in length: scores {n}, maps {len(self.maps)}, labels {len(self.labels)}, masks {len(self.masks)}"
            )
        if self.mask_known is None:
            self.mask_known = np.ones(n, dtype=bool)
        self.mask_known = np.asarray(self.mask_known, dtype=bool).reshape(-1)
        if len(self.mask_known) != n:
            raise ValueError(f"prediction parts differ in length: scores {n}, mask_known {len(self.mask_known)}")
        for name in ("image_scores", "maps"):
            arr = np.asarray(getattr(self, name))
            if not np.isfinite(arr).all():
                bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
                where = ", ".join(self.paths[i] for i in bad[:3]) if self.paths else str(bad[:3].tolist())
                raise ValueError(f"{name} has NaN or inf for {len(bad)} image(s), e.g. {where}")


def evaluate(
    pred: Prediction, fpr_limit: float = 0.3, pixel: bool = True, *, released_pro: bool = False
) -> dict[str, float]:
    """Image AUROC/AP and, if ``pixel`` and the test set has defect masks, pixel AUROC/AP and AU-PRO
    (the standard one, :func:`adlib.metrics.au_pro`).

    The image metrics use every image. The pixel metrics use the images whose mask is known
    (``pred.mask_known``; normal images always count, with an all-zero mask): when some anomalous
    image has no mask, they are computed over the others and the output gains ``"pixel_images"``,
    the number of images they were computed on (absent when every mask is known, so the keys of
    fully masked data are unchanged); when no anomalous image has a mask, they are left out with a
    warning.

    ``released_pro=True`` adds ``"pro_released"``: the PRO of GLASS's released code
    (:func:`adlib.metrics.pro_released`: about 200 thresholds, predictions dilated 5 x 5 for the
    overlaps, FPR rescaled over the points below ``fpr_limit``), beside the standard ``"au_pro"``.
    Off by default (the returned keys, hence existing records, are unchanged)."""
    out = {
        "image_auroc": metrics.image_auroc(pred.labels, pred.image_scores),
        "image_ap": metrics.image_ap(pred.labels, pred.image_scores),
    }
    if pixel:
        sub = pixel_subset(pred)
        if sub is not None and _check_defect_masks(sub):
            out.update(metrics.pixel_metrics(sub.masks, sub.maps, fpr_limit=fpr_limit))
            if released_pro:
                out["pro_released"] = metrics.pro_released(sub.masks, sub.maps, fpr_limit=fpr_limit)
            if len(sub.labels) < len(pred.labels):
                out["pixel_images"] = len(sub.labels)
    return {k: float(v) for k, v in out.items()}


def pixel_subset(pred: Prediction) -> Prediction | None:
    """The part of ``pred`` the pixel metrics are computed on: every image whose mask is known
    (normal images always are). ``pred`` itself when every mask is known; None, with a warning
    naming an example, when no anomalous image has a known mask (the pixel metrics are then left
    out); otherwise a :class:`Prediction` of the known images, logged with how many were left out."""
    labels = np.asarray(pred.labels)
    known = np.asarray(pred.mask_known, dtype=bool) | (labels == 0)
    if known.all():
        return pred
    names = pred.paths if len(pred.paths) == len(labels) else [f"#{i}" for i in range(len(labels))]
    unknown = np.flatnonzero(~known)
    if not (known & (labels == 1)).any():
        log.warning(
            "none of the %d anomalous image(s) has a mask (e.g. %s): pixel AUROC, pixel AP and AU-PRO are left "
            "out, image metrics only",
            int((labels == 1).sum()),
            names[unknown[0]],
        )
        return None
    log.info(
        "pixel metrics on the %d image(s) whose mask is known: %d anomalous image(s) without a mask left out (e.g. %s)",
        int(known.sum()),
        len(unknown),
        names[unknown[0]],
    )
    idx = np.flatnonzero(known)
    return Prediction(
        image_scores=np.asarray(pred.image_scores)[idx],
        maps=np.asarray(pred.maps)[idx],
        labels=labels[idx],
        masks=np.asarray(pred.masks)[idx],
        paths=[names[i] for i in idx] if pred.paths else [],
        defect_types=[pred.defect_types[i] for i in idx] if len(pred.defect_types) == len(labels) else [],
    )


def _check_defect_masks(pred: Prediction) -> bool:
    """Whether the pixel metrics can be computed (some mask has a defect pixel); warns, naming the
    files, about images labelled anomalous whose mask is empty and, when no mask has a defect
    pixel, that the pixel metrics are left out."""
    labels = np.asarray(pred.labels)
    has_pixels = np.asarray(pred.masks).reshape(len(labels), -1).any(axis=1)
    names = pred.paths if len(pred.paths) == len(labels) else [f"#{i}" for i in range(len(labels))]
    empty = [names[i] for i in np.flatnonzero((labels == 1) & ~has_pixels)]
    if not has_pixels.any():
        if empty:
            log.warning(
                "no defect pixel in any mask of the %d image(s) labelled anomalous (e.g. %s): pixel AUROC, "
                "pixel AP and AU-PRO are left out, image metrics only (expected for a dataset without masks)",
                len(empty),
                ", ".join(empty[:3]),
            )
        return False
    if empty:
        log.warning(
            "%d image(s) labelled anomalous have an empty mask (%s%s): they count in the image metrics; in the "
            "pixel metrics all their pixels count as normal and AU-PRO has no region for them",
            len(empty),
            ", ".join(empty[:5]),
            ", ..." if len(empty) > 5 else "",
        )
    return True


# ----------------------------------------------------------------------------------------------
# Machinery every method's torch model shares


def resolve_device(device=None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU; anything else as ``torch.device``."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any]) -> None:
    """ "Precise BN": replace every BatchNorm layer's running mean / variance of ``net`` by their
    plain (cumulative) average over ``batches``, each passed to ``forward`` in train mode without
    gradients; the layers' momenta and the module's mode are restored afterwards.

    The exponential running averages of training mix statistics of weights that changed from step
    to step; after a short schedule at a high learning rate they lag the final weights, and the
    eval-mode network differs from the one trained. Training never reads the running statistics,
    so this changes inference only. ``batches`` is consumed lazily (draw them from a dedicated
    generator so that the training streams, and a resumed fit, are untouched)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = net.training
    net.train()
    try:
        for batch in batches:
            forward(batch)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        net.train(was_training)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path`` then ``os.replace``: a reader never sees
    half a checkpoint, and a run killed while saving keeps the previous one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # durable before it replaces the previous checkpoint
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def load_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing, empty, truncated or foreign
    file raises ``ValueError`` naming it and how to recover (train the run again)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty; delete its folder {path.parent} and train the run again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler errors all mean an unusable file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first}); it is truncated, corrupt or not an "
            f"adlib checkpoint: delete its folder {path.parent} and train the run again"
        ) from exc


def fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a module's parameters and buffers, in state-dict order."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_checkpoint(path: str | os.PathLike, name: str) -> dict[str, Any]:
    """A checkpoint written by a method's ``save`` (``torch.load(weights_only=True)``, on the
    CPU); ``ValueError`` naming the file unless it is a ``name`` checkpoint."""
    state = load_checkpoint_file(path)
    found = state.get("name") if isinstance(state, dict) else None
    if found != name:
        raise ValueError(f"{path} is a {found!r} checkpoint, not {name!r}")
    return state


def check_resumable(path: str | os.PathLike, mine: dict[str, Any], theirs: dict[str, Any], free_fields) -> None:
    """Raise ``ValueError`` (naming the file and the fields) unless a checkpoint's config
    ``theirs`` equals the resuming model's ``mine`` outside ``free_fields`` (tuples and lists
    compare equal: a config read back from a checkpoint has lists)."""

    def norm(v):
        return list(v) if isinstance(v, tuple) else v

    diff = sorted(
        k for k in set(mine) | set(theirs) if k not in free_fields and norm(mine.get(k)) != norm(theirs.get(k))
    )
    if diff:
        raise ValueError(
            f"cannot resume from {path}: its config differs in {diff}; remove it or use another checkpoint_dir"
        )


def predict_dataset(
    test_ds,
    score_batch: Callable[[Any], tuple[Any, np.ndarray]],
    *,
    batch_size: int,
    desc: str = "predict",
    progress: bool = True,
) -> Prediction:
    """Run ``score_batch`` over ``test_ds`` in order and assemble a :class:`Prediction`.

    ``score_batch(batch)`` gets a batch of :class:`adlib.data.base.Sample` and returns
    ``(image_scores, maps)``: scores of shape (B,) (tensor or array) and maps (B, H, W) at the
    resolution of ``batch.mask``. Ground truth (labels, binary masks, paths, defect types) is
    taken from the batches here, so every method is evaluated against exactly the same targets;
    which masks are known comes from ``test_ds.mask_known`` (:class:`~adlib.data.AnomalyDataset`;
    all known for a dataset without it).
    """
    loader = torch.utils.data.DataLoader(test_ds, batch_size=batch_size, shuffle=False, num_workers=0)
    scores, maps, labels, masks, paths, types = [], [], [], [], [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            s, m = score_batch(batch)
            s = s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s)
            m = np.asarray(m, dtype=np.float32)
            if m.shape[-2:] != tuple(batch.mask.shape[-2:]):
                raise ValueError(
                    f"{desc}: maps of shape {m.shape[-2:]} for masks of shape {tuple(batch.mask.shape[-2:])}"
                )
            scores.append(s.reshape(-1))
            maps.append(m)
            labels.append(np.asarray(batch.label))
            masks.append((batch.mask[:, 0].numpy() > 0).astype(np.uint8))
            paths += list(batch.path)
            types += list(batch.defect_type)
    if not scores:
        raise ValueError(f"{desc}: the test set is empty")
    n = sum(len(s) for s in scores)
    known = getattr(test_ds, "mask_known", None)  # AnomalyDataset: per record, aligned (no shuffling)
    known = np.asarray(known, dtype=bool) if known is not None and len(known) == n else None
    return Prediction(
        image_scores=np.concatenate(scores).astype(np.float64),
        maps=np.concatenate(maps),
        labels=np.concatenate(labels).astype(np.int64),
        masks=np.concatenate(masks),
        paths=paths,
        defect_types=types,
        mask_known=known,
    )
