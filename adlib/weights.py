"""The pretrained weight files the paper profile needs: list them, check them, import them offline.

>>> [s.tag for s in needed()]                       # doctest: +SKIP
['wide_resnet50_2.tv_in1k', 'resnet18.tv_in1k', ..., 'tf_efficientnet_b4.in1k']
>>> [r.status for r in check()]                     # doctest: +SKIP
>>> import_file("~/Downloads/model.safetensors")    # doctest: +SKIP

What is needed is derived from the code, not from a hand list: every registered method's ``paper``
config (each registry name, variants included) and the config overrides of the papers' experiment
tables that change the backbone (GLASS Table 5, ADTR Table 4 (c), ...: :func:`paper_settings`). A
setting with ``pretrained=True`` needs its backbone's timm tag (:data:`adlib.backbones.BACKBONES`
or the config's ``backbone_tag``). For each tag, the expected state dict (keys and shapes, the
parameter count) comes from building the timm architecture on the ``meta`` device, without weights
and without memory; that is what :func:`check` and :func:`import_file` verify a file against.

Where adlib looks for a tag's weights (:mod:`adlib.backbones`): the weights dir
(``$ADLIB_WEIGHTS_DIR``, else ``<repo>/weights``) as ``<tag>.safetensors`` (or ``.pth`` / ``.bin``),
then the Hugging Face cache (hub repo ``timm/<tag>``, ``model.safetensors``). :func:`import_file`
verifies a ``.safetensors`` / ``.pth`` / ``.bin`` file (safetensors, or ``torch.load`` with
``weights_only=True``: no code runs), identifies the needed backbone whose keys and shapes it
matches, and writes ``<weights dir>/<tag>.safetensors`` atomically (a ``.pth`` is converted),
recording the SHA-256 of the source and of the filed file in ``<weights dir>/adlib-weights.json``.

Shapes identify an architecture, not which training produced the weights: timm's default
``wide_resnet50_2`` weights (``racm_in1k``) have the same shapes as torchvision's original ones
(``tv_in1k``, what GLASS used). Download the file the list names. The SHA-256 of the hub files is
not known offline (``unknown``); the original ``.pth`` files that timm's configs point at carry the
first hex digits of their SHA-256 in their names (torch.hub's convention), which is checked when a
file's digest has them.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the record of imported files in the weights dir
MANIFEST = "adlib-weights.json"
#: buffers a weights file may lack (BatchNorm fills them in when loading)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_HASH_RE = re.compile(r"-([a-f0-9]{6,})\.")


class WeightsImportError(ValueError):
    """A file that is not usable as the weights of any needed backbone (the message names it)."""


@dataclass(frozen=True)
class WeightsSpec:
    """One pretrained file the paper profile needs, and what it must hold."""

    tag: str  # timm tag, e.g. "wide_resnet50_2.tv_in1k"
    backbone: str  # adlib's backbone name, e.g. "wide_resnet50_2"
    used_by: tuple[str, ...]  # methods (paper config) and paper table rows that need it
    shapes: dict[str, tuple[int, ...]] = field(repr=False)  # required keys -> shapes
    optional: frozenset[str] = field(default=frozenset(), repr=False)  # keys a file may lack
    params: int = 0
    tensor_bytes: int = 0  # bytes of the float32 tensors of the architecture
    hub_repo: str = ""
    hub_file: str = "model.safetensors"
    url: str = ""  # the original file timm's config points at (torchvision's .pth for the ResNets)

    @property
    def file_name(self) -> str:
        return f"{self.tag}.safetensors"

    @property
    def url_sha256_prefix(self) -> str | None:
        """The SHA-256 prefix in the original file's name (torch.hub's convention), if any."""
        m = _HASH_RE.search(self.url.rsplit("/", 1)[-1]) if self.url else None
        return m.group(1) if m else None

    @property
    def hub_url(self) -> str:
        return f"https://huggingface.co/{self.hub_repo}/resolve/main/{self.hub_file}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "backbone": self.backbone,
            "used_by": list(self.used_by),
            "file": self.file_name,
            "hub_repo": self.hub_repo,
            "hub_file": self.hub_file,
            "hub_url": self.hub_url,
            "size_bytes": f"~{self.tensor_bytes} (float32 tensors; the file adds a small header)",
            "sha256": "unknown",
            "original_url": self.url or None,
            "original_sha256_prefix": self.url_sha256_prefix,
            "params": self.params,
            "tensors": len(self.shapes),
        }


def paper_settings(profile: str = "paper") -> list[tuple[str, str, dict[str, Any]]]:
    """``(used_by, method, overrides)`` of every configuration the profile's notebooks build: each
    registry name (a method or a variant) and the rows of the papers' tables that override config
    fields (GLASS Tables 4-5 and the adaptor ablation, POUTA Table V, ADL Table 2 and its study, ADTR
    Table 4). ``used_by`` is the method, or ``<notebook> <table> <row>`` for a table row."""
    from .models.base import NAMES, _load_all
    from .papers import adl, adtr, glass, pouta

    _load_all()
    out: list[tuple[str, str, dict[str, Any]]] = [(e.method, e.method, e.overrides) for e in NAMES.values()]
    for name, opts in glass.table5_settings(profile).items():
        out.append((f"glass/04_ablations Table 5 '{name}'", "glass", {"variant": "m", **opts}))
    for name, opts in {**glass.TABLE4, **glass.ADAPTOR}.items():
        out.append((f"glass/04_ablations '{name}'", "glass", {"variant": "m", **opts}))
    for name, (method, opts) in glass.TRAINED.items():
        out.append((f"glass/03_main_tables '{name}'", method, opts))
    for name, (method, opts) in {**pouta.TRAINED, **pouta.ABLATIONS}.items():
        out.append((f"pouta '{name}'", method, opts))
    for name, (method, opts) in {**adl.TRAINED, **adl.STUDY_METHODS}.items():
        out.append((f"adl '{name}'", method, opts))
    for name, opts in adl.TABLE2.items():
        out.append((f"adl/03_ablation_sensitivity Table 2 '{name}'", "adl", opts))
    for name, (method, opts) in adtr.TRAINED.items():
        out.append((f"adtr '{name}'", method, opts))
    for sub, name, opts in adtr.ABLATIONS:
        out.append((f"adtr/03_ablations Table 4({sub}) '{name}'", "adtr", adtr.ablation_overrides(opts, profile)))
    return out


def _backbone_of(method: str, overrides: dict[str, Any], profile: str) -> tuple[str, str] | None:
    """``(backbone, tag)`` of a setting that loads pretrained weights, else None."""
    from .backbones import BACKBONES
    from .models.base import MODELS

    cfg = MODELS[method].Config.for_profile(profile, **overrides)
    if not getattr(cfg, "pretrained", False) or not getattr(cfg, "backbone", None):
        return None
    if getattr(cfg, "target", "features") != "features":  # ADTR on pixels: no backbone
        return None
    tag = getattr(cfg, "backbone_tag", None) or BACKBONES.get(cfg.backbone, cfg.backbone)
    return cfg.backbone, tag


@functools.cache
def spec_for(tag: str, backbone: str = "", used_by: tuple[str, ...] = ()) -> WeightsSpec:
    """The expected content of ``tag``'s weights file: the timm architecture built on the ``meta``
    device (no weights, no memory), its state-dict keys and shapes, parameter count, hub names."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(tag, pretrained=False)
    sd = model.state_dict()
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in sd.items()}
    optional = frozenset(k for k in shapes if k.rsplit(".", 1)[-1] in OPTIONAL_SUFFIXES)
    cfg = timm.models.get_pretrained_cfg(tag)
    hub_repo = (getattr(cfg, "hf_hub_id", None) or f"timm/{tag}") if cfg is not None else f"timm/{tag}"
    if hub_repo.endswith("/"):  # timm writes "timm/" for "timm/<tag>"
        hub_repo = hub_repo + tag
    return WeightsSpec(
        tag=tag,
        backbone=backbone or tag.split(".")[0],
        used_by=used_by,
        shapes=shapes,
        optional=optional,
        params=int(sum(p.numel() for p in model.parameters())),
        tensor_bytes=int(sum(v.numel() * 4 for k, v in sd.items() if k not in optional)),
        hub_repo=hub_repo,
        hub_file=(getattr(cfg, "hf_hub_filename", None) or "model.safetensors")
        if cfg is not None
        else "model.safetensors",
        url=(getattr(cfg, "url", None) or "") if cfg is not None else "",
    )


def needed(profile: str = "paper") -> list[WeightsSpec]:
    """Every pretrained file the profile needs (none for ``smoke``), in order of first use, with the
    methods and table rows that need it (:func:`paper_settings`)."""
    users: dict[tuple[str, str], list[str]] = {}
    method_tag: dict[str, str] = {}
    for used_by, method, overrides in paper_settings(profile):
        bb = _backbone_of(method, overrides, profile)
        if bb is None:
            continue
        who = users.setdefault(bb, [])
        if used_by == method:
            method_tag.setdefault(method, bb[1])
        elif method_tag.get(method) == bb[1]:
            continue  # a table row on the method's own backbone: the method already says it
        if used_by not in who:
            who.append(used_by)
    return [spec_for(tag, backbone, tuple(who)) for (backbone, tag), who in users.items()]


# -- reading and verifying files ----------------------------------------------------------------


def _unwrap(state: Any) -> dict[str, Any]:
    """The flat tensor dict of a checkpoint: ``state_dict`` / ``model`` wrappers and a ``module.``
    prefix (DataParallel) removed."""
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise WeightsImportError(f"holds a {type(state).__name__}, not a state dict")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_state(path: str | os.PathLike, tensors: bool = True) -> dict[str, Any]:
    """A weights file's tensors (``tensors=False``: their shapes only, read from a safetensors
    header without the data). ``.safetensors`` by safetensors; anything else by ``torch.load`` with
    ``weights_only=True`` (no code runs). :class:`WeightsImportError` for an unreadable file."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if tensors:
                    return {k: f.get_tensor(k) for k in f.keys()}
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not the zip format: mmap is not possible
            state = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/torch raise many kinds for a bad file
        raise WeightsImportError(f"cannot be read as weights ({type(exc).__name__}: {exc})") from exc
    state = _unwrap(state)
    if not tensors:
        return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@dataclass(frozen=True)
class Match:
    """How a file's shapes compare with one spec."""

    spec: WeightsSpec
    matched: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, in file, expected

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self) -> str:
        need = len(self.spec.shapes) - len(self.spec.optional)
        parts = [f"{self.matched} of {need} tensors match"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:3])})")
        for key, got, want in self.wrong_shape[:2]:
            parts.append(
                f"{key} is {'x'.join(map(str, got)) or 'scalar'} in the file, {'x'.join(map(str, want))} expected"
            )
        if len(self.wrong_shape) > 2:
            parts.append(f"{len(self.wrong_shape) - 2} more shapes differ")
        return "; ".join(parts)


def compare(shapes: dict[str, tuple[int, ...]], spec: WeightsSpec) -> Match:
    """A file's ``{key: shape}`` against ``spec`` (keys a file may lack, :data:`OPTIONAL_SUFFIXES`,
    are neither required nor refused)."""
    missing = tuple(k for k in spec.shapes if k not in shapes and k not in spec.optional)
    unexpected = tuple(k for k in shapes if k not in spec.shapes)
    wrong = tuple(
        (k, tuple(shapes[k]), spec.shapes[k]) for k in spec.shapes if k in shapes and tuple(shapes[k]) != spec.shapes[k]
    )
    matched = sum(
        1 for k in spec.shapes if k not in spec.optional and k in shapes and tuple(shapes[k]) == spec.shapes[k]
    )
    return Match(spec, matched, missing, unexpected, wrong)


def identify(shapes: dict[str, tuple[int, ...]], specs: Sequence[WeightsSpec]) -> tuple[Match | None, Match | None]:
    """``(the spec the shapes match exactly, the closest spec)``; the first is None when none matches."""
    matches = [compare(shapes, s) for s in specs]
    exact = next((m for m in matches if m.ok), None)
    closest = max(
        matches, key=lambda m: (m.matched - len(m.unexpected) - len(m.wrong_shape), -len(m.missing)), default=None
    )
    return exact, closest


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- check ------------------------------------------------------------------------------------


@dataclass
class Found:
    """One needed file and where it was found."""

    spec: WeightsSpec
    status: str  # "ready" (adlib uses it), "in --dir" (found there, not yet where adlib looks), "bad", "missing"
    where: str = ""  # "weights dir", "hf cache", "--dir"
    path: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ready", "in --dir")

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.spec.tag,
            "status": self.status,
            "where": self.where,
            "path": self.path,
            "detail": self.detail,
        }


def _candidates(spec: WeightsSpec, folder: Path | None) -> list[tuple[str, Path]]:
    from .backbones import _cached_hub_file, _weights_dir_file

    out: list[tuple[str, Path]] = []
    local = _weights_dir_file(spec.tag)
    if local is not None:
        out.append(("weights dir", local))
    try:
        cached = _cached_hub_file(spec.hub_repo)
    except Exception:  # noqa: BLE001 - an unreadable cache is "not in the cache"
        cached = None
    if cached is not None:
        out.append(("hf cache", cached))
    if folder is not None:
        names = [f"{spec.tag}{s}" for s in (".safetensors", ".pth", ".bin")]
        names += [f"{spec.tag}/{spec.hub_file}", f"{spec.hub_repo}/{spec.hub_file}"]
        if spec.url:
            names.append(spec.url.rsplit("/", 1)[-1])
        out += [("--dir", folder / n) for n in names if (folder / n).is_file()]
    return out


def check(
    folder: str | os.PathLike | None = None, profile: str = "paper", specs: Sequence[WeightsSpec] | None = None
) -> list[Found]:
    """For each needed file (:func:`needed`), where it is: the weights dir or the Hugging Face
    cache (``ready``: adlib uses it), ``folder`` (``in --dir``: import it), or ``missing``. A file
    found but whose keys or shapes do not match (read from the header for safetensors) is ``bad``;
    a bad file in the weights dir hides the cache (adlib loads it first), so it is ``bad`` whatever
    else is found."""
    folder = Path(folder).expanduser() if folder else None
    out = []
    for spec in specs if specs is not None else needed(profile):
        row = Found(spec, "missing")
        for where, path in _candidates(spec, folder):
            try:
                m = compare(read_state(path, tensors=False), spec)
                problem = None if m.ok else m.describe()
            except WeightsImportError as exc:
                problem = str(exc)
            if problem is not None:
                if row.status == "missing":
                    row = Found(spec, "bad", where, str(path), problem)
                if where == "weights dir":  # adlib takes this file first and would fail on it
                    row = Found(spec, "bad", where, str(path), problem + " (adlib would load this file: replace it)")
                    break
                continue
            row = Found(spec, "ready" if where != "--dir" else "in --dir", where, str(path))
            if where == "--dir":
                row.detail = f"file it where adlib looks: adlib weights import {path}"
            break
        out.append(row)
    for r in out:
        log.debug("weights %s: %s %s", r.spec.tag, r.status, r.path)
    return out


# -- import -----------------------------------------------------------------------------------


@dataclass
class Imported:
    source: str
    tag: str
    dest: str
    sha256: str  # of the filed file
    source_sha256: str
    converted: bool
    replaced: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _atomic_write(dest: Path, write) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _record(dest_dir: Path, entry: Imported) -> None:
    path = dest_dir / MANIFEST
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[entry.tag] = {**entry.as_dict(), "imported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def import_file(
    path: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    tag: str | None = None,
    force: bool = False,
    profile: str = "paper",
    specs: Sequence[WeightsSpec] | None = None,
) -> Imported:
    """Verify ``path`` (a ``.safetensors``, ``.pth`` or ``.bin`` state dict) against the needed
    backbones (``tag``: against that one only) and file it as ``<dest>/<tag>.safetensors`` (``dest``:
    default the weights dir), atomically; a ``.pth`` (or a wrapped / ``module.``-prefixed state
    dict) is converted, a clean safetensors file copied byte for byte. A file already there with
    other content is replaced only with ``force``. :class:`WeightsImportError` names the file and
    the closest backbone's mismatch."""
    import torch
    from safetensors.torch import save_file

    from .backbones import weights_dir

    src = Path(path).expanduser()
    if not src.is_file():
        raise WeightsImportError(f"{src}: no such file")
    specs = list(specs if specs is not None else needed(profile))
    if tag is not None:
        chosen = [s for s in specs if s.tag == tag]
        if not chosen:
            raise WeightsImportError(
                f"{src}: --tag {tag} is not a backbone the {profile} profile needs; needed: {', '.join(s.tag for s in specs)}"
            )
        specs = chosen
    try:
        state = read_state(src)
    except WeightsImportError as exc:
        raise WeightsImportError(f"{src}: {exc}") from None
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    exact, closest = identify(shapes, specs)
    if exact is None:
        near = f"closest: {closest.spec.tag} ({closest.describe()})" if closest is not None else "no backbone is needed"
        raise WeightsImportError(f"{src} matches no backbone the {profile} profile needs; {near}")
    spec = exact.spec
    src_sha = sha256(src)
    note = ""
    prefix = spec.url_sha256_prefix
    if prefix and src.name == spec.url.rsplit("/", 1)[-1] and not src_sha.startswith(prefix):
        raise WeightsImportError(
            f"{src} is named like {spec.url} but its SHA-256 {src_sha[:12]} does not start with {prefix} (a corrupt or different file)"
        )
    if prefix and src_sha.startswith(prefix):
        note = f"identified as {spec.url} (SHA-256 starts with {prefix})"
    out_dir = Path(dest).expanduser() if dest else weights_dir()
    target = out_dir / spec.file_name
    clean = (
        src.suffix == ".safetensors"
        and set(state) <= set(spec.shapes)
        and all(v.dtype == torch.float32 or k in spec.optional for k, v in state.items())
    )
    replaced = target.is_file()
    if replaced:
        old = sha256(target)
        if clean and old == src_sha:
            entry = Imported(str(src), spec.tag, str(target), old, src_sha, False, False, "already there, identical")
            _record(out_dir, entry)
            return entry
        if not force:
            raise WeightsImportError(
                f"{src} matches {spec.tag}, but {target} exists with other content (SHA-256 {old[:12]}); "
                "pass --force (force=True) to replace it"
            )
    if clean:
        import shutil

        _atomic_write(target, lambda tmp: shutil.copyfile(src, tmp))
    else:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if k in spec.shapes}
        _atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "source": src.name}))
    entry = Imported(str(src), spec.tag, str(target), sha256(target), src_sha, not clean, replaced, note)
    _record(out_dir, entry)
    log.info("weights %s filed at %s (sha256 %s) from %s", spec.tag, target, entry.sha256[:12], src)
    return entry


# -- tables -----------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"~{n / 1e6:.1f} MB"


def list_table(specs: Iterable[WeightsSpec]) -> str:
    """The ``adlib weights list`` tables: what each file is, then where it goes and comes from."""
    from .backbones import weights_dir

    specs = list(specs)
    what = _table(
        ("timm tag", "backbone", "size", "params", "tensors", "sha256", "used by"),
        [
            (
                s.tag,
                s.backbone,
                _mb(s.tensor_bytes),
                f"{s.params / 1e6:.2f} M",
                str(len(s.shapes) - len(s.optional)),
                "unknown",
                ", ".join(s.used_by),
            )
            for s in specs
        ],
    )
    where = _table(
        ("timm tag", "file in the weights dir", "download (hub repo timm/<tag>, model.safetensors)"),
        [(s.tag, s.file_name, s.hub_url) for s in specs],
    )
    orig = _table(
        ("timm tag", "original file timm's config names", "sha256 prefix"),
        [(s.tag, s.url, s.url_sha256_prefix or "unknown") for s in specs if s.url],
    )
    foot = (
        f"weights dir: {weights_dir()} ($ADLIB_WEIGHTS_DIR, else <repo>/weights). size: the float32 tensors "
        "(the file adds a small header). sha256 of the hub files: not known offline; the original files carry "
        "the first hex digits of theirs in their names (torch.hub's convention), checked on import.\n"
        "Offline: download the files on a machine with internet, then `adlib weights import FILE...` "
        "verifies and files them, `adlib weights check` says what is still missing."
    )
    return "\n\n".join([what, where, orig, foot])


def check_table(rows: Iterable[Found]) -> str:
    """The ``adlib weights check`` table."""
    return _table(
        ("timm tag", "status", "where", "path / detail"),
        [(r.spec.tag, r.status, r.where or "-", "; ".join(x for x in (r.path, r.detail) if x) or "-") for r in rows],
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    widths[-1] = 0  # the last column is not padded
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * max(len(h), 3) for h in head])] + [line(r) for r in rows])


__all__ = [
    "MANIFEST",
    "Found",
    "Imported",
    "Match",
    "WeightsImportError",
    "WeightsSpec",
    "check",
    "check_table",
    "compare",
    "identify",
    "import_file",
    "list_table",
    "needed",
    "paper_settings",
    "read_state",
    "sha256",
    "spec_for",
]
