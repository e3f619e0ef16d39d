"""Frozen timm backbones returning the requested layers, with a record of the weights used.

>>> fx = FeatureExtractor("wide_resnet50_2", layers=("layer2", "layer3"), pretrained=True)  # doctest: +SKIP
>>> feats = fx(images)          # {"layer2": B x 512 x H/8 x W/8, "layer3": B x 1024 x H/16 x W/16}
>>> fx.info.weights             # e.g. "timm:wide_resnet50_2.tv_in1k (hf cache)"  # doctest: +SKIP

Weights
-------
Each backbone has a default pretrained tag (:data:`BACKBONES`). The ResNets default to
torchvision's original ImageNet weights (timm tag ``.tv_in1k``), which is what the GLASS authors
used; timm's own default ``wide_resnet50_2`` tag (``racm_in1k``) gives noticeably different
results. Where weights come from, in order:

1. ``weights_file=PATH`` (or ``<weights dir>/<tag>.{safetensors,pth,bin}``, the weights dir being
   ``$ADLIB_WEIGHTS_DIR``, else ``<repo>/weights``): a local file, loaded by timm with
   ``pretrained_cfg_overlay=dict(file=PATH)``;
2. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), used directly without touching the network;
3. a download through timm's normal mechanism, unless ``HF_HUB_OFFLINE`` is set, in which case a
   missing cache fails at once instead of after retries.

If none works, :class:`WeightsUnavailable` says how to provide the weights: offline, ``adlib weights
list`` names every file the paper profile needs, ``adlib weights import PATH`` verifies one and files
it in the weights dir, ``adlib weights check`` says what is there (:mod:`adlib.weights`). ``pretrained=False``
builds the same architecture with a seeded random initialisation and works everywhere (the smoke
profile uses it). :attr:`FeatureExtractor.info` records which weights were used: every result
carries it.

The extractor is frozen: parameters do not require gradients and the module stays in eval mode
(BatchNorm statistics fixed) even when a parent module is put in train mode.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)

#: backbone name -> default pretrained tag
BACKBONES: dict[str, str] = {
    "wide_resnet50_2": "wide_resnet50_2.tv_in1k",
    "resnet18": "resnet18.tv_in1k",
    "resnet34": "resnet34.tv_in1k",
    "resnet50": "resnet50.tv_in1k",
    "resnet101": "resnet101.tv_in1k",
    "efficientnet_b0": "tf_efficientnet_b0.in1k",
    "efficientnet_b4": "tf_efficientnet_b4.in1k",
}

ENV_WEIGHTS_DIR = "ADLIB_WEIGHTS_DIR"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be obtained (offline and not cached, or a bad file)."""


@dataclass(frozen=True)
class BackboneInfo:
    name: str  # backbone name, e.g. "wide_resnet50_2"
    tag: str  # timm model tag whose architecture (and, if pretrained, weights) is used
    pretrained: bool
    weights: str  # human-readable provenance: "timm:<tag> (hf cache)", "file:<path> sha256:<12>", "random-init seed=0"
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _cached_hub_file(repo_id: str) -> Path | None:
    """A weights file of ``repo_id`` already in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, fname, cache_dir=str(_hub_cache_dir()))
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def weights_dir() -> Path:
    """Where adlib looks for ``<tag>.safetensors`` (and ``.pth`` / ``.bin``): ``$ADLIB_WEIGHTS_DIR``,
    else ``<repo>/weights`` (like the data root); ``adlib weights import`` files weights there."""
    from .paths import repo_root

    d = os.environ.get(ENV_WEIGHTS_DIR)
    return Path(d).expanduser() if d else repo_root() / "weights"


def _weights_dir_file(tag: str) -> Path | None:
    d = weights_dir()
    for suffix in (".safetensors", ".pth", ".bin"):
        p = d / f"{tag}{suffix}"
        if p.is_file():
            return p
    return None


def _sha256(path: Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def how_to_provide(tag: str) -> str:
    """The instructions printed when the weights for ``tag`` cannot be obtained."""
    arch = tag.split(".")[0]
    return (
        f"To provide the weights for {tag!r}: (1) run once with internet access so timm caches them "
        f"(Hugging Face cache, {_hub_cache_dir()}); or (2) offline: `adlib weights list` names every file the "
        f"paper profile needs; download this one on another machine (hub repo 'timm/{tag}', file model.safetensors: "
        f"https://huggingface.co/timm/{tag}/resolve/main/model.safetensors), then "
        f"`adlib weights import ~/Downloads/model.safetensors` verifies it and files it as "
        f"{weights_dir() / (tag + '.safetensors')} (${ENV_WEIGHTS_DIR}, else <repo>/weights), and "
        f"`adlib weights check` shows what is still missing; or pass weights_file=PATH (CLI: --set weights_file=PATH) "
        f"for a file of the {arch} architecture; or (3) use pretrained=False "
        f"(the smoke profile does) with random weights, which every result then records."
    )


def resolve_layers(model_name: str, layers: Sequence[str | int]) -> tuple[list[int], list[str]]:
    """timm ``features_only`` indices and module names of ``layers`` (names like ``"layer2"`` or indices)."""
    probe = timm.create_model(model_name, pretrained=False, features_only=True)
    names = list(probe.feature_info.module_name())
    idx, out = [], []
    for layer in layers:
        if isinstance(layer, int):
            if not 0 <= layer < len(names):
                raise ValueError(f"layer index {layer} out of range for {model_name} (0..{len(names) - 1}: {names})")
            idx.append(layer)
            out.append(names[layer])
        else:
            key = layer.replace(".", "_")
            cand = [i for i, n in enumerate(names) if n.replace(".", "_") == key]
            if not cand:
                raise ValueError(f"unknown layer {layer!r} for {model_name}; available: {names}")
            idx.append(cand[0])
            out.append(names[cand[0]])
    return idx, out


class FeatureExtractor(nn.Module):
    """A frozen timm backbone returning ``{layer_name: B x C x h x w}`` for the requested layers.

    Parameters
    ----------
    name:
        a key of :data:`BACKBONES` (``wide_resnet50_2``, ``resnet18``, ``resnet50``, ``resnet101``,
        ...), or any timm model name with an explicit ``tag``.
    layers:
        layer names as timm's ``feature_info`` names them (ResNets: ``layer1`` .. ``layer4``) or
        their indices.
    pretrained:
        load pretrained weights (see the module docstring for where from); False gives a seeded
        random initialisation.
    tag:
        timm tag overriding the default of :data:`BACKBONES` (e.g. ``"wide_resnet50_2.racm_in1k"``).
    weights_file:
        local weights file (safetensors or torch state dict) for the tag's architecture.
    seed:
        seed of the random initialisation when ``pretrained=False``.
    """

    @classmethod
    def from_config(cls, cfg, layers: Sequence[str | int] | None = None) -> FeatureExtractor:
        """The backbone a method's config names: its fields ``backbone``, ``layers`` (or
        ``layers`` given), ``pretrained``, ``backbone_tag``, ``weights_file``, ``backbone_seed``."""
        return cls(
            cfg.backbone,
            cfg.layers if layers is None else layers,
            pretrained=cfg.pretrained,
            tag=cfg.backbone_tag,
            weights_file=cfg.weights_file,
            seed=cfg.backbone_seed,
        )

    def __init__(
        self,
        name: str,
        layers: Sequence[str | int] = ("layer2", "layer3"),
        pretrained: bool = True,
        tag: str | None = None,
        weights_file: str | os.PathLike | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if tag is None:
            if name not in BACKBONES:
                raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)} (or pass tag=...)")
            tag = BACKBONES[name]
        arch = tag.split(".")[0]
        out_indices, layer_names = resolve_layers(arch, layers)
        kwargs = dict(features_only=True, out_indices=tuple(out_indices))

        if not pretrained:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = timm.create_model(tag, pretrained=False, **kwargs)
            weights = f"random-init seed={seed}"
        else:
            self.model, weights = self._load_pretrained(tag, weights_file, kwargs)

        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        fi = self.model.feature_info
        self.info = BackboneInfo(
            name=name,
            tag=tag,
            pretrained=pretrained,
            weights=weights,
            layers=tuple(layer_names),
            channels=tuple(int(c) for c in fi.channels()),
            strides=tuple(int(r) for r in fi.reduction()),
        )
        log.info("backbone %s layers=%s weights=%s", tag, layer_names, weights)

    @staticmethod
    def _load_pretrained(tag: str, weights_file, kwargs) -> tuple[nn.Module, str]:
        file = Path(weights_file).expanduser() if weights_file else _weights_dir_file(tag)
        if file is not None:
            if not file.is_file():
                raise WeightsUnavailable(f"weights file not found: {file}. " + how_to_provide(tag))
            try:
                model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **kwargs)
            except Exception as exc:  # noqa: BLE001 - timm/torch raise many kinds for a bad file
                raise WeightsUnavailable(f"cannot load weights file {file} for {tag!r}: {exc}") from exc
            return model, f"file:{file} sha256:{_sha256(file)}"

        cfg = timm.models.get_pretrained_cfg(tag)
        repo_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if repo_id:
            cached = _cached_hub_file(repo_id)
            if cached is not None:
                model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(cached)), **kwargs)
                return model, f"timm:{tag} (hf cache {cached.parent.name[:12]})"
        if _truthy(os.environ.get("HF_HUB_OFFLINE")):
            raise WeightsUnavailable(
                f"pretrained weights for {tag!r} are not in the local cache and HF_HUB_OFFLINE is set. "
                + how_to_provide(tag)
            )
        try:
            model = timm.create_model(tag, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise WeightsUnavailable(
                f"could not obtain pretrained weights for {tag!r} ({type(exc).__name__}: {exc}). " + how_to_provide(tag)
            ) from exc
        return model, f"timm:{tag} (downloaded)"

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Frozen: stay in eval mode whatever the parent asks.
        super().train(False)
        return self

    def set_speed(self, speed, device) -> None:
        """The fast paths of :mod:`adlib.fastpath` (``speed``: a :class:`adlib.fastpath.Speed`) on
        ``device``: bf16 autocast of the forward (features returned in float32), channels-last
        weights and input, ``torch.compile`` (``mode="reduce-overhead"``, CUDA graphs, with
        ``cuda_graphs`` on CUDA). The compiled function is kept outside the module's children, so
        the state dict, the fingerprint and checkpoints are those of the fp32 path."""
        device = torch.device(device)
        was_cl = getattr(self, "_speed", None) is not None and self._speed.channels_last
        if speed.channels_last and not was_cl:
            self.model.to(memory_format=torch.channels_last)
        elif was_cl and not speed.channels_last:  # back to the fp32 path's layout
            self.model.to(memory_format=torch.contiguous_format)
        want = None
        if speed.compile or speed.cuda_graphs:
            want = "reduce-overhead" if speed.cuda_graphs and device.type == "cuda" else "default"
        if want != getattr(self, "_compiled_mode", None):
            compiled = torch.compile(self.model, mode=want) if want is not None else None
            object.__setattr__(self, "_compiled", compiled)
            object.__setattr__(self, "_compiled_mode", want)
        object.__setattr__(self, "_speed", speed if speed else None)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        speed = getattr(self, "_speed", None)
        if speed is None:  # the fp32 path
            feats = self.model(x)
            return dict(zip(self.info.layers, feats))
        from .fastpath import autocast

        if speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        run = getattr(self, "_compiled", None) or self.model
        with autocast(speed, x.device):
            feats = run(x)
        return {k: f.float().contiguous() for k, f in zip(self.info.layers, feats)}
