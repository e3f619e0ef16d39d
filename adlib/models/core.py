"""One lifecycle for every method: configuration, seeding, training epochs, checkpoints, provenance.

A method is a :class:`Method` (PatchCore: no epochs) or an :class:`EpochMethod` (GLASS,
SimpleNet, POUTA, Vanilla, ADL, ADTR) with a :class:`MethodConfig` dataclass as its ``Config``.
The base classes own the engineering; a method supplies its networks, hooks and equations.

Configuration (:class:`MethodConfig`)
    ``Config.for_profile(profile, **overrides)`` merges the profile's defaults (``PROFILES``) with
    overrides (unknown names rejected); ``__post_init__`` runs ``_validate`` (errors name the
    field; a subclass extends it with ``super()._validate()``), so every config that exists is
    valid; ``as_dict()`` is what checkpoints and ``info()`` record.

Seeding
    :func:`seed_for` derives independent seeds from ``(seed, stream)`` (plus a method's salt,
    ``SEED_SALT``: ADTR's ``0xAD7``); ``model.generators`` are CPU ``torch.Generator`` streams named
    by ``STREAMS`` and seeded with stream numbers 0, 1, ... in that order; modules are initialised
    under :meth:`Method._seeded_init` (``torch.manual_seed(seed)`` in a forked RNG, the global
    state untouched).

The epoch loop (:meth:`EpochMethod.fit`)::

    fit(train_ds, device=, progress=, checkpoint_dir=)
      to(device); resume from <checkpoint_dir>/last.pt if present (config must match outside
      RESUME_FREE_FIELDS: epochs and data_root, where the data lives, not what is trained)
      data = _fit_start(train_ds, progress)      # load images, synthesisers, cached features
      while epoch < total_epochs:
          _epoch_start(data)                     # e.g. ADTR's fresh optimiser for a new stage
          stats = _run_epoch(data)               # the method's training epoch
          epoch += 1
          _epoch_end(data, stats)                # e.g. BatchNorm recalibration after the last one
          history.append(stats); save(last.pt)   # atomically, after every epoch
      _fit_end(data); eval()

    Everything a resumed fit needs (weights, optimiser and generator states, epoch, history) is
    in the checkpoint, so a resumed fit equals an uninterrupted one bitwise.

Persistence
    ``state()`` = ``format``, ``name``, ``config`` and the method's ``_state()``; ``save`` writes it
    atomically; ``load`` and resume read it through :func:`adlib.models.base.read_checkpoint`
    (method name and format checked) and restore it with ``_load_state``. A frozen backbone is
    rebuilt from the config and checked against the checkpoint's ``backbone_fingerprint``
    (:meth:`Method._check_backbone`).

Provenance: ``info()`` = name, variant, config, the method's ``_info()`` and, for epoch methods,
model selection, epochs trained and seconds per epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .base import (
    atomic_torch_save,
    check_resumable,
    config_overrides,
    fingerprint,
    predict_dataset,
    read_checkpoint,
    resolve_device,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def seed_for(seed: int, stream: int, salt: int | None = None) -> int:
    """An independent 63-bit seed for random stream ``stream`` of a run seeded ``seed``
    (``numpy.random.SeedSequence([seed, stream(, salt)])``); ``salt`` separates a method's streams
    from another's (ADTR: ``0xAD7``; None: no salt, GLASS, SimpleNet, POUTA, Vanilla, ADL)."""
    entropy = [int(seed), int(stream)] + ([int(salt)] if salt is not None else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclasses.dataclass(frozen=True)
class CliOption:
    """A method's own option of ``adlib train`` / ``adlib test``, declared by its config
    (:attr:`MethodConfig.CLI_OPTIONS`); the generic command line knows none of them.

    ``apply(value, overrides, protocol)`` writes the parsed value into the config overrides and/or
    the training protocol (:mod:`adlib.protocols`); it raises ``ValueError`` naming the option for
    a bad value."""

    flag: str
    help: str
    apply: Callable[[Any, dict[str, Any], dict[str, Any]], None]
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] = str
    metavar: str | None = None


class DraemSynthesis:
    """Mixin of the methods trained on DRAEM-style synthetic anomalies (POUTA, Vanilla, ADL,
    DRAEM): the synthesiser of ``cfg.synthesis`` (:func:`adlib.synthesis.draem.synthesizer_for`) is
    built once, before the first epoch, and the texture source it draws from is recorded for
    provenance (``texture_description``, ``texture_is_stand_in``)."""

    synthesizer = None
    texture_description: str | None = None
    texture_is_stand_in: bool | None = None

    def _prepare(self) -> None:
        if self.synthesizer is not None:
            return
        from ..synthesis.draem import synthesizer_for

        self.synthesizer, textures = synthesizer_for(self.cfg.synthesis, self.cfg.data_root)
        self.texture_description = textures.description
        self.texture_is_stand_in = bool(textures.is_stand_in)

    def _fit_start(self, train_ds, progress: bool):
        """The training images in memory, then the synthesiser (:meth:`_prepare`)."""
        images = self._load_images(train_ds, progress)
        self._prepare()
        return images

    def train_step(self, x_in, target, mask) -> dict[str, float]:
        """One optimiser step on the ``loss`` of ``compute_losses(x_in, target, mask)`` (the method's
        total loss: POUTA ``L_total``, DRAEM Eq. 3) for a batch of synthesised inputs, anomaly-free
        targets and masks; returns the losses (floats). ADL overrides it (label shuffling, clipping)."""
        self.net.train()
        out = self.compute_losses(x_in.to(self.device), target.to(self.device), mask.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in out.items()}

    def _texture_state(self) -> dict[str, Any]:
        return {"texture_description": self.texture_description, "texture_is_stand_in": self.texture_is_stand_in}

    def _load_texture_state(self, state: dict[str, Any]) -> None:
        self.texture_description = state.get("texture_description")
        self.texture_is_stand_in = state.get("texture_is_stand_in")

    # the checkpoint of these methods: the trained modules and optimisers, and the texture provenance
    def _state(self) -> dict[str, Any]:
        return {**super()._state(), **self._trained_state(), **self._texture_state()}

    def _load_state(self, state: dict[str, Any], path=None, strict: bool = True) -> None:
        self._load_trained_state(state)
        self._load_texture_state(state)
        self.to(self.device)


class NetworkPart:
    """A method's attribute that is a part of its one module: ``model.<name>`` reads and assigns
    ``model.network.<attribute>`` (default: the same name), so the papers' names (``features``,
    ``adaptor``, ``memory_bank``, ...) stay on the method while one ``nn.Module`` holds them."""

    def __init__(self, attribute: str | None = None, doc: str | None = None) -> None:
        self.attribute = attribute
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = self.attribute or name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj.network, self.attribute)

    def __set__(self, obj, value) -> None:
        setattr(obj.network, self.attribute, value)


@dataclasses.dataclass(frozen=True)
class FlopPart:
    """A part of a method whose FLOPs the bill (:mod:`adlib.bill`) measures: ``module`` called on one
    input of ``shape`` (batch 1), forward only or forward and backward (``backward``: the sum of
    the outputs is back-propagated, so the gradients of the trainable parameters are counted and a
    frozen part is not back-propagated through)."""

    module: torch.nn.Module
    shape: tuple[int, ...]
    backward: bool = False


@dataclasses.dataclass
class Workload:
    """What one run of a method does, in images and passes of its parts (:meth:`Method.workload`).

    ``train_images``: images through a training step, over all epochs (an image seen in 10 epochs
    counts 10 times); ``test_images``: images scored, the final prediction(s) and any evaluation
    of the test set during training; ``passes``: name of a :meth:`Method.flop_parts` part -> how
    many times it runs on one input (the bill multiplies by the part's measured FLOPs);
    ``extra_flops``: FLOPs counted by a formula rather than measured (``note`` says which);
    ``extra_state_bytes``: bytes the saved model holds beyond its trained modules and optimiser
    state (PatchCore's memory bank, GLASS's last-epoch copy)."""

    train_images: int = 0
    test_images: int = 0
    passes: dict[str, float] = dataclasses.field(default_factory=dict)
    extra_flops: float = 0.0
    extra_state_bytes: int = 0
    note: str = ""


def input_hw(transform) -> tuple[int, int]:
    """``(H, W)`` of the images a method's transform produces (its crop, else its resize): the fixed
    input size of an exported model (:mod:`adlib.export`). ``ValueError`` when the size depends on
    the image (no resize; or a shorter-side resize without a crop)."""
    size = transform.crop if transform.crop is not None else transform.resize
    if size is None or (transform.crop is None and transform.resize_mode == "shorter_side" and isinstance(size, int)):
        raise ValueError(f"the transform {transform} has no fixed output size (a crop or a (H, W) resize is needed)")
    return transform._hw(size)


def input_size(transform) -> int:
    """The side of the square image a method's transform produces (its crop, else its resize)."""
    size = transform.crop or transform.resize
    return int(size if isinstance(size, int) else max(size))


@dataclasses.dataclass
class MethodConfig:
    """Base of every method's settings: profiles, validation at construction, ``as_dict``.

    ``fast``: the opt-in fast paths of :mod:`adlib.fastpath` (``bf16``, ``channels_last``,
    ``features``, ``compile``, ``cuda_graphs``), applied by the shared lifecycle to the method's inference and
    training; ``()`` (every profile's default) is the fp32 path. Part of the run's key when set."""

    #: opt-in fast paths (:mod:`adlib.fastpath`); () = the fp32 path
    fast: tuple[str, ...] | str = ()

    #: profile name -> field defaults (``smoke``: CPU-sized; ``paper``: the paper's settings)
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the method's own command-line options (``adlib train METHOD --help`` lists them)
    CLI_OPTIONS: ClassVar[tuple[CliOption, ...]] = ()

    def __post_init__(self) -> None:
        from .. import fastpath

        self.fast = fastpath.parse(self.fast, f"{type(self).__qualname__}.fast")
        self._validate()

    #: the rehearsal's size caps (:mod:`adlib.rehearsal`): field -> the largest value a rehearsal of
    #: the paper profile keeps (image sides, epochs, steps); :meth:`rehearsal_changes` applies them
    REHEARSAL: ClassVar[dict[str, int]] = {}

    @classmethod
    def for_profile(cls, profile: str = "smoke", **overrides: Any):
        """The profile's defaults (``smoke``: CPU-sized; ``paper``: the paper's settings) plus
        overrides; in a rehearsal of the paper profile (:func:`adlib.rehearsal.active`), shrunk by
        :meth:`rehearsal_changes` after the overrides."""
        if profile not in cls.PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(cls.PROFILES)}")
        if "fast" not in overrides and "fast" not in cls.PROFILES[profile]:
            from ..fastpath import profile_default

            fast = profile_default(profile)  # $ADLIB_FAST for the paper profile (adlib reproduce --fast)
            if fast:
                overrides = {**overrides, "fast": fast}
        cfg = cls(**config_overrides(cls, cls.PROFILES[profile], overrides))
        if profile == "paper":
            from .. import rehearsal

            if rehearsal.active():
                changes = cfg.rehearsal_changes()
                if changes:
                    cfg = dataclasses.replace(cfg, **changes)
        return cfg

    def rehearsal_changes(self) -> dict[str, Any]:
        """What a rehearsal of the paper profile changes in this config (:mod:`adlib.rehearsal`):
        only sizes shrink, every field of :attr:`REHEARSAL` capped at its value, and a pretrained
        backbone becomes a random-init one. Methods with coupled sizes (a resize that follows the
        crop, milestones that follow the epochs, a grid that follows the image) extend it."""
        out: dict[str, Any] = {}
        for name, cap in self.REHEARSAL.items():
            value = getattr(self, name)
            if value is not None and value > cap:
                out[name] = cap
        if getattr(self, "pretrained", False):
            out["pretrained"] = False
        return out

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _validate(self) -> None:
        """Check (and normalise, e.g. lists to tuples) the fields; ``ValueError`` naming the field."""


@dataclasses.dataclass
class ImagePredictions:
    """What :meth:`Method.predict_images` returns: per input, in order, its name (``paths``: the
    file path, or ``<array i>`` / ``<image i>`` for an in-memory image), its image score
    (``scores``, float64) and its anomaly map at the input's own size (``maps``: float32 ``H x W``
    arrays, sizes may differ from input to input)."""

    paths: list[str]
    scores: np.ndarray
    maps: list[np.ndarray]


class _ImageList(torch.utils.data.Dataset):
    """Arbitrary images as a test set for a method's ``predict``: each read lazily (files through
    :func:`adlib.data.base.open_image`), passed through ``transform``, with an all-zero mask and
    label 0 (unknown); the size of every input is recorded in ``sizes`` when it is read."""

    def __init__(self, images: list, transform) -> None:
        self.items: list[tuple[str, Any]] = []
        for i, im in enumerate(images):
            if isinstance(im, (str, os.PathLike)):
                self.items.append((str(im), Path(im)))
            elif isinstance(im, Image.Image):
                self.items.append((f"<image {i}>", im))
            elif isinstance(im, np.ndarray):
                ok = im.dtype == np.uint8 and (im.ndim == 2 or (im.ndim == 3 and im.shape[2] == 3))
                if not ok:
                    raise ValueError(
                        f"image {i}: an array must be H x W x 3 (or H x W) uint8, got shape {im.shape} dtype {im.dtype}"
                    )
                self.items.append((f"<array {i}>", Image.fromarray(im)))
            else:
                raise ValueError(f"image {i}: expected a path, a PIL image or a uint8 array, got {type(im).__name__}")
        self.transform = transform
        self.sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from ..data.base import Sample, open_image

        name, src = self.items[index]
        img = open_image(src) if isinstance(src, Path) else src
        self.sizes[index] = (img.size[1], img.size[0])
        x = self.transform.image(img)
        return Sample(x, torch.zeros((1, *x.shape[-2:]), dtype=torch.float32), 0, "unknown", name)


def map_to_input(amap: np.ndarray, transform, input_hw: tuple[int, int]) -> np.ndarray:
    """A map at a transform's output size taken back to the input image's ``(H, W)``: the inverse
    of ``transform``'s geometry. Without a crop the map is resized bilinearly to ``input_hw``
    (:func:`adlib.metrics.resize_maps`); with a centre crop it is first placed where the crop was
    taken in the resized image (the border the model never saw gets the map's minimum), then resized."""
    from ..metrics import resize_maps

    amap = np.asarray(amap, dtype=np.float32)
    if transform.crop is not None:
        rh, rw = transform.resized_hw(input_hw)
        ch, cw = transform._hw(transform.crop)
        if transform.resize_mode == "shorter_side":
            top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        else:
            top, left = (rh - ch) // 2, (rw - cw) // 2
        canvas = np.full((rh, rw), amap.min(), dtype=np.float32)
        canvas[top : top + ch, left : left + cw] = amap
        amap = canvas
    if amap.shape != tuple(input_hw):
        amap = resize_maps(amap, tuple(input_hw))
    return amap


class Method:
    """What every method shares: config, seeding, device, persistence, provenance."""

    Config: ClassVar[type] = MethodConfig
    name: ClassVar[str] = ""
    CHECKPOINT_FORMAT: ClassVar[int] = CHECKPOINT_FORMAT
    #: the method's salt of :func:`seed_for` (None: none)
    SEED_SALT: ClassVar[int | None] = None
    #: names of the generator streams (``self.generators``), seeded with stream numbers 0, 1, ...
    STREAMS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        cfg = cfg if cfg is not None else self.Config()
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(cfg).__name__}")
        cfg._validate()
        self.cfg = cfg
        self.device = torch.device("cpu")
        self.generators = {k: torch.Generator().manual_seed(self.seed_for(i)) for i, k in enumerate(self.STREAMS)}

    # -- seeding -------------------------------------------------------------------------------
    def seed_for(self, stream: int) -> int:
        """:func:`seed_for` of this model's seed and salt."""
        return seed_for(self.cfg.seed, stream, self.SEED_SALT)

    @contextlib.contextmanager
    def _seeded_init(self) -> Iterator[None]:
        """Module initialisation under ``torch.manual_seed(cfg.seed)``, the global RNG untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            yield

    # -- basics --------------------------------------------------------------------------------
    @property
    def variant(self) -> str | None:
        return getattr(self.cfg, "variant", None)

    @property
    def label(self) -> str:
        return self.name + (f"-{self.variant}" if self.variant else "")

    @property
    def network(self) -> torch.nn.Module:
        """The method as one ``nn.Module`` holding all its trainable and frozen parts (what export,
        compilation and multi-device wrappers take; GLASS / SimpleNet, PatchCore and ADTR wrap their
        parts in one, POUTA, Vanilla and ADL are one network): ``net`` unless a method says
        otherwise. Its ``forward`` is the method's network forward on prepared images."""
        return self.net

    def modules(self) -> dict[str, torch.nn.Module]:
        """The model's torch modules by name (moved by :meth:`to`): its one :attr:`network`."""
        return {"net": self.network}

    def optimizers(self) -> list[torch.optim.Optimizer | None]:
        """The model's optimisers (their state follows the parameters in :meth:`to`): ``optimizer``
        when the method has one."""
        opt = getattr(self, "optimizer", None)
        return [opt] if opt is not None else []

    def to(self, device):
        """Put the method on ``device`` (every ``fit`` and ``predict`` passes here). On the CPU this
        also switches to the reference numerics' kernels (:func:`adlib.numerics.pin_backends`: no
        oneDNN, no NNPACK; nothing in native mode), so a model used outside the results store runs
        on the same kernels as the store's runs. Then the fast paths of ``cfg.fast``."""
        device = torch.device(device)
        if device.type == "cpu":
            from .. import numerics

            numerics.pin_backends()
        for m in self.modules().values():
            m.to(device)
        for opt in self.optimizers():
            if opt is not None and opt.state:
                opt.load_state_dict(opt.state_dict())  # moves the state to the parameters' device
        self.device = device
        self._apply_fast()
        return self

    # -- fast paths (adlib.fastpath) -------------------------------------------------------------
    #: whether predict smooths the maps with a Gaussian (the fast path ``smoothing`` applies)
    smooths_maps: bool = False
    #: whether training runs a gradient ascent on features (GLASS's GAS: the fast path ``bf16_ascent`` applies)
    ascends: bool = False
    #: whether predict runs trained heads on frozen features whose products the fast path
    #: ``bf16_heads`` puts under bf16 (GLASS and SimpleNet: the adaptor and the discriminator)
    bf16_heads: bool = False

    @property
    def speed(self):
        """The fast paths of ``cfg.fast`` (:class:`adlib.fastpath.Speed`; all off: the fp32 path)."""
        from .. import fastpath

        return fastpath.Speed.of(getattr(self.cfg, "fast", ()))

    def set_fast(self, fast) -> None:
        """Switch the fast paths (``fast``: as ``cfg.fast``, e.g. ``"bf16,channels-last"`` or ``()``)
        for what follows, e.g. to score a model trained on the fp32 path with bf16; the config
        (hence :meth:`info`) says the new setting."""
        from .. import fastpath

        self.cfg = dataclasses.replace(self.cfg, fast=fastpath.parse(fast))
        self._apply_fast()

    def _apply_fast(self) -> None:
        """Put the network on the fast paths of :attr:`speed` (:func:`adlib.fastpath.apply`; the
        fp32 path touches nothing) and remember what applied, for :meth:`info`."""
        from .. import fastpath

        speed = self.speed
        if not speed and getattr(self, "_fast_applied", None) is None:
            return
        self._fast_applied = fastpath.apply(
            self.network, speed, self.device, self.smooths_maps, self.ascends, self.bf16_heads
        )

    def eval(self) -> None:
        for m in self.modules().values():
            m.eval()

    @staticmethod
    def _load_samples(ds, progress: bool) -> list:
        return [ds[i] for i in tqdm(range(len(ds)), desc="loading train images", disable=not progress, leave=False)]

    @classmethod
    def _load_images(cls, ds, progress: bool) -> torch.Tensor:
        """The images of every sample of ``ds`` stacked (``N x 3 x H x W``)."""
        return torch.stack([s.image for s in cls._load_samples(ds, progress)])

    # -- backbone ------------------------------------------------------------------------------
    def _backbone(self) -> torch.nn.Module | None:
        """The frozen backbone rebuilt from the config (None: none, or it is saved with the weights)."""
        return None

    def backbone_fingerprint(self) -> str | None:
        """SHA-256 (16 hex digits) of the frozen backbone's weights (None without one); computed once."""
        bb = self._backbone()
        if bb is None:
            return None
        cached = getattr(self, "_backbone_fingerprint", None)
        if cached is None:
            cached = self._backbone_fingerprint = fingerprint(bb)
        return cached

    def _check_backbone(self, state: dict[str, Any], path, strict: bool = True) -> None:
        """Refuse (``strict``; else log a warning) a rebuilt backbone whose weights differ from the
        checkpoint's (key ``backbone_fingerprint``; ``backbonefingerprint`` is read too)."""
        want = state.get("backbone_fingerprint", state.get("backbonefingerprint"))
        fp = self.backbone_fingerprint()
        if want is None or fp == want:
            return
        weights = getattr(getattr(self._backbone(), "info", None), "weights", "?")
        msg = (
            f"{path}: the rebuilt backbone ({weights}, sha256 {fp}) differs from the one the checkpoint was "
            f"made with (sha256 {want}); provide the same weights"
        )
        if strict:
            raise ValueError(msg)
        log.warning(msg)

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """The method's part of a checkpoint: tensors and Python primitives only."""
        return {}

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds: tensors and Python primitives only."""
        return {"format": self.CHECKPOINT_FORMAT, "name": self.name, "config": self.cfg.as_dict(), **self._state()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`state` atomically (temporary file + ``os.replace``) to ``path``."""
        return atomic_torch_save(self.state(), path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> dict[str, Any]:
        """A checkpoint of this method (:func:`read_checkpoint`) of the supported format."""
        state = read_checkpoint(path, cls.name)
        if state.get("format") != cls.CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path}: unsupported checkpoint format {state.get('format')!r} (expected {cls.CHECKPOINT_FORMAT})"
            )
        return state

    def _load_state(self, state: dict[str, Any], path=None, strict: bool = True) -> None:
        """Restore a checkpoint's state (the config is already the model's)."""
        raise NotImplementedError

    @classmethod
    def _from_config(cls, cfg: MethodConfig):
        """The model :meth:`load` fills in (e.g. without fetching weights the checkpoint replaces)."""
        return cls(cfg)

    @classmethod
    def load(cls, path: str | os.PathLike, strict: bool = True):
        """Restore a model written by :meth:`save` (``torch.load(weights_only=True)``). ``strict``:
        refuse a rebuilt frozen backbone that differs from the checkpoint's (else warn)."""
        state = cls.read(path)
        model = cls._from_config(cls.Config(**state["config"]))
        model._load_state(state, path, strict=strict)
        model.eval()
        return model

    def _predict_batches(self, test_ds, score_batch, batch_size: int | None, progress: bool):
        """:func:`~adlib.models.base.predict_dataset` over ``test_ds`` with ``score_batch`` (a batch ->
        image scores and maps), in batches of ``batch_size`` (None: the config's), with a progress bar
        named after the model. Under a fast path (:attr:`speed`) the batches are scored on it and
        their outputs cast back to float32."""
        from .. import fastpath

        self._apply_fast()
        if self.speed:
            plain = score_batch

            def score_batch(batch):
                s, m = plain(batch)
                return fastpath.to_float(s), fastpath.to_float(m)

        return predict_dataset(
            test_ds,
            score_batch,
            batch_size=batch_size or self.cfg.batch_size,
            desc=f"{self.label} predict",
            progress=progress,
        )

    def predict_images(
        self, images, *, device=None, progress: bool = False, transform=None, tile=None, overlap: float = 0.25
    ) -> ImagePredictions:
        """Score arbitrary images: ``images`` is a list of paths, PIL images and/or ``H x W x 3``
        (or ``H x W``) uint8 arrays. Each is read (files through :func:`adlib.data.base.open_image`),
        passed through the model's :attr:`transform` (or ``transform``: e.g. GLASS's
        ``transform_for(dataset, category)``), scored by the method's own :meth:`predict`, and its
        map taken back to the input's size (:func:`map_to_input`). A file that cannot be read
        raises :class:`adlib.data.DataError` naming it; an empty list ``ValueError``. With ``tile``
        (pixels of the input), images larger than it are scored in overlapping tiles, maps averaged
        where tiles overlap and the score the maximum over tiles (:func:`adlib.predict.predict_tiled`)."""
        if tile is not None:
            from ..predict import predict_tiled

            return predict_tiled(
                self, images, tile=tile, overlap=overlap, device=device, progress=progress, transform=transform
            )
        images = list(images)
        if not images:
            raise ValueError("predict_images: no images given")
        tf = transform if transform is not None else self.transform
        ds = _ImageList(images, tf)
        pred = self.predict(ds, device=device, progress=progress)
        maps = [map_to_input(pred.maps[i], tf, ds.sizes[i]) for i in range(len(ds))]
        return ImagePredictions(
            paths=[name for name, _ in ds.items],
            scores=np.asarray(pred.image_scores, dtype=np.float64),
            maps=maps,
        )

    # -- export (:mod:`adlib.export`) ------------------------------------------------------------
    def export_module(self) -> torch.nn.Module:
        """The method's inference path as one ``nn.Module`` for export (:mod:`adlib.export`):
        prepared images ``B x 3 x H x W`` (what :attr:`transform` produces, at :func:`input_hw`)
        -> ``(score B, map B x H x W)``, computed as :meth:`predict` computes them (its image score;
        its map at the transform's output size, up-sampling and smoothing included). Each method
        builds it from its own parts; ``NotImplementedError`` for a method that has none."""
        raise NotImplementedError(f"{self.label}: this method has no export module")

    # -- what the run pipeline asks of a method --------------------------------------------------
    @property
    def fit_uses_test_set(self) -> bool:
        """Whether :meth:`fit` selects on the test set and needs ``test_ds=`` (GLASS's released
        ``select_best_on_test``); the run pipeline (:func:`adlib.results.run_job`) passes it then."""
        return False

    @classmethod
    def table_fields(cls, info: dict[str, Any]) -> dict[str, Any]:
        """The method's own columns of the results table, read from a record's ``info()`` (the
        store's :func:`~adlib.results.flatten` adds them to the row); none by default."""
        return {}

    # -- what a run costs (the bill, :mod:`adlib.bill`) ------------------------------------------
    def flop_parts(self) -> dict[str, FlopPart]:
        """The parts whose FLOPs the bill measures: ``infer``, the :attr:`network` forward on one
        image at the method's input size (:func:`input_size` of ``self.transform``)."""
        s = input_size(self.transform)
        return {"infer": FlopPart(self.network, (1, 3, s, s))}

    def workload(self, n_train: int, n_test: int) -> Workload:
        """What a run on ``n_train`` training and ``n_test`` test images does: here (a method
        without epochs) every training image once through ``infer`` (the fit) and every test image
        once (the prediction)."""
        return Workload(train_images=n_train, test_images=n_test, passes={"infer": n_train + n_test})

    # -- provenance ----------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        """The method's provenance (backbone, weights, choices made at fit time, ...)."""
        return {}

    def fast_info(self) -> dict[str, Any]:
        """Which path runs (:func:`adlib.fastpath.describe`): ``fp32`` or the fast paths, where each
        applied, and on the CPU whether bf16 has AMX / AVX-512-bf16 units under the numerics in force."""
        from .. import fastpath

        return fastpath.describe(self.speed, self.device, getattr(self, "_fast_applied", None))

    def info(self) -> dict[str, Any]:
        out = {"name": self.name, "variant": self.variant, "config": self.cfg.as_dict(), **self._info()}
        if self.speed:  # the fp32 path's info is as before
            out["speed"] = self.fast_info()
        return out


class EpochMethod(Method):
    """A method trained for epochs: the loop, per-epoch atomic checkpoints, exact resume."""

    #: config fields that may differ between a checkpoint and the resuming model
    RESUME_FREE_FIELDS: ClassVar[frozenset[str]] = frozenset({"epochs", "data_root"})

    def __init__(self, cfg: MethodConfig | None = None) -> None:
        super().__init__(cfg)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    @property
    def total_epochs(self) -> int:
        return int(self.cfg.epochs)

    def flop_parts(self) -> dict[str, FlopPart]:
        """``infer`` (:meth:`Method.flop_parts`) and ``train``: the :attr:`network`'s forward and
        backward on one image (frozen parts are not back-propagated through)."""
        parts = super().flop_parts()
        return {**parts, "train": FlopPart(parts["infer"].module, parts["infer"].shape, backward=True)}

    def workload(self, n_train: int, n_test: int) -> Workload:
        """Every training image once per epoch through ``train`` (:attr:`total_epochs` epochs, one
        network forward and backward each: POUTA, Vanilla and DRAEM, whose epochs go over the
        training set once, DRAEM drawing as many images with replacement), then every test image
        once through ``infer``."""
        train = int(self.total_epochs) * int(n_train)
        return Workload(train_images=train, test_images=n_test, passes={"train": train, "infer": n_test})

    # -- hooks ---------------------------------------------------------------------------------
    def _fit_start(self, train_ds, progress: bool) -> Any:
        """Before the first epoch of a fit: load the data, prepare synthesis; returns what
        :meth:`_run_epoch` gets."""
        raise NotImplementedError

    def _fit_description(self, train_ds, data) -> str:
        return f"{len(data[0]) if isinstance(data, tuple) else len(data)} images"

    def _epoch_start(self, data) -> None:
        """Before each epoch (outside its timing)."""

    def _run_epoch(self, data) -> dict[str, Any]:
        """One training epoch (at 0-based :attr:`epoch`); returns its statistics (``loss`` among them)."""
        raise NotImplementedError

    def _epoch_end(self, data, stats: dict[str, Any]) -> None:
        """After each epoch (:attr:`epoch` already counts it), before its checkpoint."""

    def _fit_end(self, data) -> None:
        """After the last epoch of a fit."""

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, train_ds, *, device=None, progress: bool = True, checkpoint_dir=None):
        """Train on ``train_ds`` up to :attr:`total_epochs` epochs in total.

        ``checkpoint_dir``: ``last.pt`` there is written (atomically) after every epoch and, if
        present at the start with the same configuration (``epochs`` and ``data_root`` may differ),
        the fit resumes after its last finished epoch. Calling ``fit`` again continues from
        :attr:`epoch` (and does nothing once it is reached).
        """
        self.to(resolve_device(device))
        ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
        if ckpt is not None and ckpt.is_file():
            self._resume(ckpt)
        total = self.total_epochs
        if self.epoch >= total:
            log.info("%s: %d epoch(s) already trained, nothing to do", self.label, self.epoch)
            self.eval()
            return self
        t0 = time.perf_counter()
        data = self._fit_start(train_ds, progress)
        log.info(
            "%s: training on %s/%s (%s) for epochs %d..%d on %s",
            self.label,
            getattr(train_ds, "name", "?"),
            getattr(train_ds, "category", "?"),
            self._fit_description(train_ds, data),
            self.epoch + 1,
            total,
            self.device,
        )
        bar = tqdm(total=total, initial=self.epoch, desc=self.label, disable=not progress)
        try:
            while self.epoch < total:
                self._epoch_start(data)
                te = time.perf_counter()
                stats = self._run_epoch(data)
                self.epoch += 1
                self._epoch_end(data, stats)
                stats = {"epoch": self.epoch, **stats, "seconds": round(time.perf_counter() - te, 4)}
                self.history.append(stats)
                log.debug("%s epoch %d: %s", self.label, self.epoch, stats)
                if ckpt is not None:
                    self.save(ckpt)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
        finally:
            bar.close()
        self._fit_end(data)
        self.eval()
        log.info("%s: trained %d epoch(s) in %.1f s", self.label, self.epoch, time.perf_counter() - t0)
        return self

    def _resume(self, path: Path) -> None:
        state = self.read(path)
        check_resumable(path, self.cfg.as_dict(), state["config"], self.RESUME_FREE_FIELDS)
        self._load_state(state, path)
        log.info("%s: resumed from %s after epoch %d", self.label, path, self.epoch)

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "epoch": int(self.epoch),
            "rng": {k: g.get_state() for k, g in self.generators.items()},
            "history": [dict(h) for h in self.history],
        }

    def _trained_state(self) -> dict[str, Any]:
        """``net`` (the trained network's tensors, on the CPU) and ``optimizer``: the checkpoint keys
        of the methods with one trained network and one optimiser (ADL, POUTA, Vanilla, ADTR)."""
        return {
            "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def _load_trained_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_trained_state` and :meth:`_state` saved (network, optimiser, epoch)."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_epoch_state(state)

    def _load_epoch_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`EpochMethod._state` saved (epoch, generator states, history)."""
        for k, g in self.generators.items():
            g.set_state(state["rng"][k])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state.get("history", [])]

    # -- provenance ----------------------------------------------------------------------------
    def _selection_info(self) -> dict[str, Any]:
        return {"mode": "last-epoch", "epoch": self.epoch}

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "selection": self._selection_info(),
            "epochs_trained": self.epoch,
            "seconds_per_epoch": (
                round(float(np.mean([h["seconds"] for h in self.history])), 4) if self.history else None
            ),
        }


__all__ = [
    "CHECKPOINT_FORMAT",
    "DraemSynthesis",
    "EpochMethod",
    "FlopPart",
    "ImagePredictions",
    "Method",
    "MethodConfig",
    "NetworkPart",
    "Workload",
    "input_hw",
    "input_size",
    "map_to_input",
    "seed_for",
]
