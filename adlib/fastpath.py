"""Opt-in fast paths of every method's inference and training: bf16, channels-last, patch features, compile, CUDA graphs.

One setting, the config field ``fast`` that every method's config has (:class:`adlib.models.core.
MethodConfig`), read once by the shared lifecycle (:mod:`adlib.models.core`): ``Method.to`` and
every ``predict`` apply it (:func:`apply`), ``EpochMethod.fit`` and every ``predict`` run under
:func:`autocast`. The default, ``fast=()``, is the fp32 path every number of the project was made
with; nothing of it changes then (the field is left out of the results store's config hash at
its default, :data:`adlib.results.ADDED_FIELDS`, so existing keys still match, and a fast run gets
a key of its own).

Options (``adlib train/test/predict --fast bf16,channels-last,features``; ``--set fast=...``; in Python
``build(name, fast=("bf16", "channels_last"))``):

``bf16``
    ``torch.autocast(dtype=torch.bfloat16)`` on the CPU (oneDNN's AMX / AVX-512-bf16 kernels
    where present) and on the GPU. Where it applies:

    - a method with a frozen backbone (:class:`adlib.backbones.FeatureExtractor`: GLASS,
      SimpleNet, PatchCore, ADL, ADTR) runs the **backbone** under autocast and hands fp32
      features on: adaptors, discriminators, decoders, nearest-neighbour search and scores stay
      fp32, so image scores are not rounded to bf16's 8 significant bits (ties in the AUROC);
    - a method without one (POUTA, Vanilla, DRAEM: trained networks end to end) runs its whole
      network forward (and, in training, its backward) under autocast, prediction outputs cast
      back to fp32.

    Under the reference numerics (:mod:`adlib.numerics`: oneDNN off) bf16 runs without AMX or
    AVX-512-bf16, emulated and slower than fp32: a warning says so and the record notes it;
    set ``ADLIB_NUMERICS=native`` before Python starts for the machine's bf16 units.
``channels_last``
    The frozen backbone's (or the whole network's, for a method without one) 4-D weights and the
    backbone's input in ``torch.channels_last`` memory format (oneDNN's and cuDNN's native layout).
``features``
    The locally aware patch features (GLASS, SimpleNet, PatchCore: :mod:`adlib.models.features`)
    in the grid order (:func:`adlib.models.features.reduce_grid`): one grouped ``p x p``
    convolution per layer on its own grid, then up-sampled, without the unfolded tensors and
    permuted copies of the released order; the same linear map, float32 rounding differences only
    (about 1e-7). At 288 px, batch 8, on the CPU this step took
    several times the backbone's time in the released order (``benchmarks/RESULTS.md``). Methods
    without them: not applied (said in the record).
``compile``
    ``torch.compile`` of the frozen backbone (inference only: it is frozen); the first batch of
    each input shape pays the compilation. Methods without a frozen backbone: not applied (said in
    the record).
``cuda_graphs``
    On CUDA, the frozen backbone compiled with ``mode="reduce-overhead"`` (CUDA graphs for fixed
    shapes); on the CPU not applied (said in the log and the record).
``bf16_ascent``
    GLASS's GAS gradient ascent (Eq. 1: the discriminator's forward and input gradient of each of
    the ascent steps, 20 in the paper profile) under bf16 autocast, in training. At the paper
    architecture these products (``B x 1296`` rows of 1536-D through the 1024-wide discriminator,
    twice per step) are most of a training step's time once the backbone is fast. Only the
    *direction* of each ascent step comes from them (it is L2-normalised, step ``eta``); the
    synthetic features stay fp32, and the losses, the update and every score are computed in fp32 as
    on the fp32 path. Training numbers are not bitwise fp32's (a training fast path); methods without
    the ascent (SimpleNet, PatchCore, ...): not applied (said in the record).
``bf16_heads``
    At inference, the products of the trained heads on the frozen features under bf16 autocast:
    GLASS's and SimpleNet's adaptor and the discriminator's hidden layer (``B x h x w`` rows of
    1536-D through a 1536- and a 1024-wide Linear at the paper architecture, about 80 GFLOP per batch
    of 8 at 288 px: most of an inference batch once the backbone runs in bf16). The discriminator's
    output layer (1024 -> 1) and the sigmoid stay fp32 (:func:`float32_tail`), so scores are not
    rounded to bf16's 8 significant bits. Then the :data:`EXACT_TOP` highest positions of each image's map
    are scored again on the fp32 path (:func:`rescore_top`), which makes the image score (the map's
    maximum) the fp32 path's whenever its position is among them: bf16's rounding alone moves a
    smoke-trained GLASS's image AUROC by up to about a point on the built-in benchmark (near-tied
    images), the rescored one not at all (image scores equal to fp32's on 6 of 6 models;
    ``benchmarks/RESULTS.md``). The rest of the map keeps bf16's rounding: pixel AUROC within 0.05
    point of fp32's on 5 of those 6 models, 0.37 on one that barely separates. Training steps are untouched (see
    ``bf16_ascent``); the per-epoch test scoring of ``select_best_on_test`` is a predict and uses it.
    Methods without such heads: not applied (said in the record).
``smoothing``
    The maps' Gaussian (GLASS and SimpleNet's Eq. 9, PatchCore, ADTR with ``smooth_sigma > 0``)
    as one batched convolution on the model's device (:func:`adlib.models.smoothing.gaussian_maps`)
    instead of SciPy per image on the CPU: the same filter and reflect border, float32 rounding
    differences only (about 1e-6 of the map's scale; ``tests/test_fastpath.py``). Methods that do
    not smooth their maps: not applied (said in the record).

The paper profile's notebooks: ``adlib reproduce --profile paper --fast bf16,channels-last,features``
(``$ADLIB_FAST``, inherited by the kernels and the results-store workers) gives every paper-profile
config those fast paths unless it sets ``fast`` itself (:meth:`adlib.models.core.MethodConfig.for_profile`);
the runs get keys of their own. Refused for the smoke profile.

Accuracy: at inference each path keeps the image AUROC within 0.1 point of the fp32 path on the
built-in benchmark (one trained model scored both ways; ``tests/test_fastpath.py``). A *training* on
another path is a different training: on that benchmark even the fp32 ``features`` path (the same
math in another order, 1e-7 apart) moves a short training's image AUROC by up to 1.15 point, and
``bf16_ascent`` by up to 0.94 (``benchmarks/RESULTS.md``); the tests bound such trainings at 1.5
points and require them to separate. Numbers are not bitwise equal to fp32's, which is why the
setting is part of the run's key and why the smoke profile never turns it on. Speed:
``benchmarks/bench_fastpath.py``, ``benchmarks/RESULTS.md``.

Open choices: ``bf16`` stops autocast at the frozen backbone's output for backbone methods (the heads'
outputs are the scores; ``bf16_heads`` is the separate opt-in for GLASS's and SimpleNet's heads, with the
image scores rescored in fp32); ``compile`` is limited to the
frozen backbone because compiling training graphs (GAS's gradient ascent, the optimisers) costs
minutes of compilation on a CPU for a short run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable
from typing import Any

import torch

log = logging.getLogger(__name__)

#: the fast-path options, in their canonical order and spelling (config values)
OPTIONS = ("bf16", "channels_last", "features", "compile", "cuda_graphs", "smoothing", "bf16_ascent", "bf16_heads")
#: other spellings accepted on input (command line, ``--set``)
ALIASES = {
    "channels-last": "channels_last",
    "channelslast": "channels_last",
    "cuda-graphs": "cuda_graphs",
    "cudagraphs": "cuda_graphs",
    "bfloat16": "bf16",
    "grid-features": "features",
    "grid_features": "features",
    "device-smoothing": "smoothing",
    "device_smoothing": "smoothing",
    "bf16-ascent": "bf16_ascent",
    "bf16-gas": "bf16_ascent",
    "bf16_gas": "bf16_ascent",
    "bf16-heads": "bf16_heads",
}
#: the fast paths of every paper-profile config that does not set ``fast`` itself (``adlib reproduce
#: --profile paper --fast ...`` sets it for the notebooks' kernels; never read for the smoke profile)
ENV = "ADLIB_FAST"
#: values meaning "no fast path"
NONE_VALUES = ("", "none", "off", "fp32", "false", "no")


def profile_default(profile: str) -> tuple[str, ...]:
    """The fast paths a profile's configs get by default: ``$ADLIB_FAST`` for the paper profile,
    none for any other (the smoke profile's numbers are pinned to the fp32 path)."""
    if profile != "paper":
        return ()
    return parse(os.environ.get(ENV), f"${ENV}")


def parse(value: Any, what: str = "fast") -> tuple[str, ...]:
    """The canonical tuple of options (order of :data:`OPTIONS`, no duplicates) from a
    comma-separated text (``"bf16,channels-last"``), a sequence of names, or None / ``"none"`` /
    ``"fp32"`` (no fast path). ``ValueError`` naming ``what`` and the bad value otherwise."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = [p.strip() for p in value.replace("+", ",").split(",")]
    elif isinstance(value, Iterable):
        items = [str(p).strip() for p in value]
    else:
        raise ValueError(f"{what}={value!r}: expected a comma-separated list of {', '.join(OPTIONS)} (or none)")
    chosen = set()
    for item in items:
        key = item.lower()
        if key in NONE_VALUES:
            continue
        key = ALIASES.get(key, key)
        if key not in OPTIONS:
            raise ValueError(
                f"{what}: unknown fast path {item!r}; expected a comma-separated list of "
                f"{', '.join(o.replace('_', '-') for o in OPTIONS)} (or none)"
            )
        chosen.add(key)
    return tuple(o for o in OPTIONS if o in chosen)


@dataclasses.dataclass(frozen=True)
class Speed:
    """The fast paths of one model (all off: the fp32 path)."""

    bf16: bool = False
    channels_last: bool = False
    features: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    smoothing: bool = False
    bf16_ascent: bool = False
    bf16_heads: bool = False

    @classmethod
    def of(cls, value: Any) -> Speed:
        """From a config value (:func:`parse`)."""
        names = parse(value)
        return cls(**{n: True for n in names})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o for o in OPTIONS if getattr(self, o))

    @property
    def label(self) -> str:
        """``fp32`` or the options joined by ``+`` (``bf16+channels_last``)."""
        return "+".join(self.names) or "fp32"

    def __bool__(self) -> bool:
        return bool(self.names)


def autocast(speed: Speed, device: Any) -> contextlib.AbstractContextManager:
    """``torch.autocast(<device type>, dtype=torch.bfloat16)`` when ``speed.bf16``, else a no-op."""
    if not speed.bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


class Bf16Scorer:
    """A GAS scorer (:data:`adlib.synthesis.gas.Scorer`, with ``bind_context`` when the wrapped one
    has it) run under bf16 autocast, its output cast back to float32: the loss on it (and its
    gradient's start) is computed in float32, the products inside in bf16."""

    def __init__(self, scorer: Any, device_type: str) -> None:
        self.scorer, self.device_type = scorer, device_type
        if hasattr(scorer, "bind_context"):
            self.bind_context = self._bind_context

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.scorer(x)
        return out.float()

    def _bind_context(self, context: torch.Tensor) -> Bf16Scorer:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            bound = self.scorer.bind_context(context)
        return Bf16Scorer(bound, self.device_type)


def heads_autocast(speed: Speed, device: Any) -> contextlib.AbstractContextManager:
    """The context of an inference's head products: bf16 autocast with ``bf16_heads``, else a no-op.
    The heads keep their last product in float32 inside it (e.g.
    :meth:`adlib.models.glass.Discriminator.output`)."""
    if not speed.bf16_heads:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


#: ``bf16_heads``: positions per image (its highest bf16 scores) scored again on the fp32 path
EXACT_TOP = 16


def rescore_top(grid: torch.Tensor, feats: torch.Tensor, score: Any, k: int = EXACT_TOP) -> torch.Tensor:
    """``grid`` (``B x h x w`` scores of ``feats``, ``B x h x w x D``, from a bf16 path) with the ``k``
    highest positions of each image replaced by ``score`` of their features on the fp32 path (autocast
    off). The maximum of the result is the fp32 path's maximum whenever its position is among those
    ``k`` (bf16's rounding would have to move a score past ``k - 1`` others for it not to be); the
    other positions keep the bf16 scores. ``score``: features ``... x D`` -> scores ``...``, row-wise
    (eval mode). Returns a float32 tensor shaped like ``grid``."""
    b = grid.shape[0]
    flat = grid.float().reshape(b, -1).clone()
    k = min(int(k), flat.shape[1])
    idx = flat.topk(k, dim=1).indices
    rows = feats.reshape(b, flat.shape[1], -1)
    picked = rows.gather(1, idx.unsqueeze(-1).expand(-1, -1, rows.shape[-1])).float()
    with torch.autocast(grid.device.type, enabled=False):
        exact = score(picked).float()
    flat.scatter_(1, idx, exact.reshape(b, k))
    return flat.reshape(grid.shape)


def float32_tail(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 with autocast off: a head's last product (its scores) kept at full
    precision when the products before it ran in bf16 (:func:`heads_autocast`, ``bf16_ascent``).
    On the fp32 path (float32 input, no autocast) this is ``layer(x)`` itself."""
    dev = x.device.type
    try:
        autocast_on = torch.is_autocast_enabled(dev)
    except RuntimeError:  # a device type without autocast (e.g. "meta", used to count FLOPs)
        return layer(x.float())
    if x.dtype == torch.float32 and not autocast_on:
        return layer(x)
    with torch.autocast(dev, enabled=False):
        return layer(x.float())


def ascent_scorer(scorer: Any, speed: Speed, device: Any) -> Any:
    """The scorer GAS's gradient ascent differentiates: ``scorer`` itself, or with ``bf16_ascent``
    the same under bf16 autocast (:class:`Bf16Scorer`)."""
    if not speed.bf16_ascent:
        return scorer
    return Bf16Scorer(scorer, torch.device(device).type)


def _onednn_cap() -> str | None:
    return os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")


def _cap_allows_amx(cap: str | None) -> bool:
    return cap is None or "AMX" in cap.upper() or cap.upper() in ("ALL", "DEFAULT")


def cpu_facts() -> dict[str, Any]:
    """What the CPU offers for bf16 and what the numerics in force let oneDNN use: ATen's
    capability, oneDNN's ISA cap (``$ONEDNN_MAX_CPU_ISA``), AMX tiles and AVX-512-bf16 present,
    mkldnn available and enabled, the numerics mode."""
    from . import numerics

    cpu = getattr(torch, "cpu", None)

    def flag(name: str) -> bool | None:
        fn = getattr(cpu, name, None)
        try:
            return bool(fn()) if fn is not None else None
        except Exception:  # noqa: BLE001 - private probes; unknown rather than a failed run
            return None

    cap = _onednn_cap()
    return {
        "numerics": numerics.mode(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": cap or "unset",
        "amx_tile": flag("_is_amx_tile_supported"),
        "avx512_bf16": flag("_is_avx512_bf16_supported"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()) and bool(torch.backends.mkldnn.enabled),
        "amx_allowed": _cap_allows_amx(cap) and bool(torch.backends.mkldnn.enabled),
    }


def describe(speed: Speed, device: Any, applied: dict[str, str] | None = None) -> dict[str, Any]:
    """The record of the path a run took: ``path`` (``fp32`` or e.g. ``bf16+channels_last``), the
    options, where each applied (``applied``: option -> what it covered, or why not), and on the
    CPU :func:`cpu_facts` with ``bf16_units``: whether bf16 ran on AMX / AVX-512-bf16 (``amx``,
    ``avx512_bf16``) or emulated (``emulated (oneDNN off)`` under the reference numerics,
    ``emulated (oneDNN capped at AVX2)`` where oneDNN is on but capped)."""
    device = torch.device(device)
    out: dict[str, Any] = {"path": speed.label, "options": list(speed.names), "device": str(device)}
    if applied:
        out["applied"] = dict(applied)
    if device.type == "cpu":
        facts = cpu_facts()
        out["cpu"] = facts
        if speed.bf16 or speed.bf16_ascent or speed.bf16_heads:
            if facts["amx_tile"] and facts["amx_allowed"]:
                units = "amx"
            elif facts["avx512_bf16"] and (
                facts["onednn_max_cpu_isa"] == "unset" or "512" in facts["onednn_max_cpu_isa"]
            ):
                units = "avx512_bf16"
            elif not facts["mkldnn"]:
                units = "emulated (oneDNN off)"
            else:
                units = f"emulated (oneDNN capped at {facts['onednn_max_cpu_isa']})"
            out["bf16_units"] = units
    return out


def _frozen_backbones(network: torch.nn.Module) -> list[torch.nn.Module]:
    from .backbones import FeatureExtractor

    return [m for m in network.modules() if isinstance(m, FeatureExtractor)]


def apply(
    network: torch.nn.Module,
    speed: Speed,
    device: Any,
    smooths_maps: bool = False,
    ascends: bool = False,
    heads: bool = False,
) -> dict[str, str]:
    """Put ``network`` (a method's one module) on the fast paths of ``speed`` (all off: back on the
    fp32 path); returns what each option covered (``"backbone"``, ``"network"``) or why it was not
    applied. Idempotent. ``smooths_maps``: whether the method smooths its maps (the ``smoothing``
    option applies in its predict, :attr:`adlib.models.core.Method.smooths_maps`); ``ascends``: whether
    its training has a gradient ascent for ``bf16_ascent`` (:attr:`adlib.models.core.Method.ascends`);
    ``heads``: whether its predict runs trained heads on frozen features under :func:`heads_autocast`
    for ``bf16_heads`` (:attr:`adlib.models.core.Method.bf16_heads`).

    With frozen backbones inside (:class:`adlib.backbones.FeatureExtractor`), they take the fast
    paths (:meth:`~adlib.backbones.FeatureExtractor.set_speed`); without, the network's own
    ``forward`` runs under bf16 autocast with its outputs cast back to float32 (losses and scores
    are computed in float32), and its 4-D weights go channels-last."""
    device = torch.device(device)
    backbones = _frozen_backbones(network)
    for fx in backbones:
        fx.set_speed(speed, device)
    if not backbones:
        _wrap_forward(network, speed.bf16)
        if speed.channels_last != bool(network.__dict__.get("_fast_channels_last", False)):
            network.to(memory_format=torch.channels_last if speed.channels_last else torch.contiguous_format)
            network.__dict__["_fast_channels_last"] = speed.channels_last
    applied: dict[str, str] = {}
    where = "backbone" if backbones else "network"
    if speed.bf16_ascent:
        applied["bf16_ascent"] = (
            "GAS gradient ascent (training)" if ascends else "not applied (no gradient ascent in training)"
        )
    if speed.bf16_heads:
        applied["bf16_heads"] = (
            "heads at inference (adaptor, discriminator hidden layer)"
            if heads
            else "not applied (no trained heads on frozen features)"
        )
    if speed.bf16 or (speed.bf16_ascent and ascends) or (speed.bf16_heads and heads):
        if speed.bf16:
            applied["bf16"] = where
        if device.type == "cpu":
            facts = cpu_facts()
            if not facts["amx_allowed"]:
                log.warning(
                    "bf16 on the CPU without AMX: the %s numerics %s, so bf16 runs emulated (slower than fp32); "
                    "start Python with ADLIB_NUMERICS=native to use the CPU's bf16 units",
                    facts["numerics"],
                    f"cap oneDNN at {facts['onednn_max_cpu_isa']}" if facts["mkldnn"] else "switch oneDNN off",
                )
    if speed.channels_last:
        applied["channels_last"] = where
    if speed.features:
        from .models.features import PatchFeatures

        has = any(isinstance(m, PatchFeatures) for m in network.modules())
        applied["features"] = "patch features" if has else "not applied (no locally aware patch features)"
    if speed.smoothing:
        applied["smoothing"] = (
            "maps (batched Gaussian on the device)"
            if smooths_maps
            else "not applied (the method does not smooth its maps)"
        )
    if speed.compile or speed.cuda_graphs:
        applied["compile"] = "backbone" if backbones else "not applied (no frozen backbone)"
    if speed.cuda_graphs:
        if device.type != "cuda":
            applied["cuda_graphs"] = "not applied (CPU)"
            log.warning("fast path cuda_graphs: not applied on %s (CUDA only)", device)
        elif backbones:
            applied["cuda_graphs"] = "backbone (torch.compile mode reduce-overhead)"
        else:
            applied["cuda_graphs"] = "not applied (no frozen backbone)"
    return applied


def _wrap_forward(network: torch.nn.Module, bf16: bool) -> None:
    """Run ``network.forward`` under bf16 autocast, outputs cast to float32 (``bf16``), or restore
    the class's own ``forward``. The wrapper is an instance attribute: the state dict, the
    fingerprint and checkpoints are untouched."""
    wrapped = "forward" in network.__dict__
    if bf16 == wrapped:
        return
    if not bf16:
        del network.__dict__["forward"]
        return
    plain = network.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        dev = tensors[0].device.type if tensors else next(network.parameters()).device.type
        with torch.autocast(dev, dtype=torch.bfloat16):
            out = plain(*args, **kwargs)
        return _tree_float(out)

    network.__dict__["forward"] = forward


def _tree_float(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return to_float(x)
    if isinstance(x, dict):
        return type(x)((k, _tree_float(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_tree_float(v) for v in x)
    if isinstance(x, tuple):  # a named tuple
        return type(x)(*(_tree_float(v) for v in x))
    return x


def whole_network(network: torch.nn.Module) -> bool:
    """Whether the fast paths cover ``network`` as a whole (no frozen backbone inside it)."""
    return not _frozen_backbones(network)


def to_float(x: Any) -> Any:
    """A low-precision floating tensor as float32 (anything else unchanged)."""
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    return x


__all__ = [
    "ALIASES",
    "ENV",
    "OPTIONS",
    "Speed",
    "apply",
    "Bf16Scorer",
    "ascent_scorer",
    "autocast",
    "EXACT_TOP",
    "float32_tail",
    "heads_autocast",
    "rescore_top",
    "cpu_facts",
    "describe",
    "parse",
    "profile_default",
    "to_float",
    "whole_network",
]
