"""The layers of adlib import downwards only: data <- synthesis <- models <- papers (no cycles).

An AST scan of every module (imports inside functions included), plus a fresh interpreter that
imports the texture module without pulling in :mod:`adlib.synthesis`; and the shared texture
drawing of :mod:`adlib.data.textures` that LAS and the DRAEM-style synthesis both use.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "adlib"

LAYERS = ("data", "synthesis", "models", "papers")
"""Lowest first: a subpackage may import only from the ones before it (and from outside these four)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported adlib module or name, line)`` for every import in ``path``, at any depth."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` imports the submodule x: count both the package and the names
            out += [(target, node.lineno)] + [(f"{target}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return [(t, line) for t, line in out if t == "adlib" or t.startswith("adlib.")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _cross_layer_edges() -> list[tuple[str, str, str, str, int]]:
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        src = _layer(_module_name(path))
        if src is None:
            continue
        for target, line in _imports(path):
            dst = _layer(target)
            if dst is not None and dst != src:
                edges.append((src, dst, str(path.relative_to(ROOT)), target, line))
    return edges


def test_scan_sees_the_known_downward_imports():
    # guards the scan itself: these imports exist (one of them inside a function)
    edges = {(e[2], e[3]) for e in _cross_layer_edges()}
    assert ("adlib/synthesis/las.py", "adlib.data.textures") in edges
    assert ("adlib/synthesis/draem.py", "adlib.data.textures.CachedTextures") in edges  # function-level


def test_layers_import_downwards_only():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{path}:{line}: {src} imports {target} ({dst})"
        for src, dst, path, target, line in _cross_layer_edges()
        if rank[dst] > rank[src]
    ]
    assert not upward, "imports against the layering data <- synthesis <- models <- papers:\n" + "\n".join(upward)


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = {name: set() for name in LAYERS}
    for src, dst, *_ in _cross_layer_edges():
        graph[src].add(dst)

    def reaches(a: str, b: str, seen: frozenset = frozenset()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph[a])

    cycles = [name for name in LAYERS if reaches(name, name)]
    assert not cycles, f"subpackages on an import cycle: {cycles} (graph {graph})"


def test_data_textures_imports_without_synthesis():
    code = (
        "import sys\n"
        "import adlib.data.textures as t\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['adlib', 'synthesis'], ['adlib', 'models'],"
        " ['adlib', 'papers']))\n"
        "assert not bad, bad\n"
        "assert t.to_uint8_image and t.draw_texture and t.CachedTextures and t.texture_source\n"
        "import adlib.synthesis.las as las\n"
        "assert las.to_uint8_image is t.to_uint8_image\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- the shared texture drawing --------------------------------------------------------------------


class _Bank:
    """A texture source stand-in: ``n`` constant textures, recording the sizes asked for."""

    def __init__(self, n: int = 5):
        self.paths = tuple(Path(f"/tex/{i}.png") for i in range(n))
        self.asked: list = []

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i, size):
        self.asked.append(size)
        h, w = size
        return torch.full((3, h, w), 10 * i, dtype=torch.uint8)


def test_draw_texture_from_source_and_passed():
    from adlib.data.textures import draw_texture

    bank = _Bank()
    g = torch.Generator().manual_seed(0)
    expected = int(torch.randint(len(bank), (), generator=torch.Generator().manual_seed(0)))
    d = draw_texture(bank, (8, 6), g, resize=(10, 9))
    assert bank.asked == [(10, 9)] and d.index == expected and d.path == str(bank.paths[expected])
    assert d.raw.shape == (3, 10, 9) and d.image.shape == (3, 8, 6) and d.image.dtype == torch.uint8
    assert d.augmentations == [] and d.params == []

    def flip(t, gen):
        return t.flip(-1).float() / 255.0, ["flip"], [{}]

    tex = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    d = draw_texture(None, 8, g, tex, augment=flip)
    assert torch.equal(g.get_state(), state)  # a passed texture draws nothing
    assert d.index is None and d.path is None and d.augmentations == ["flip"]
    assert d.raw.shape == (3, 8, 8) and d.image.dtype == torch.float32
    with pytest.raises(ValueError, match="Mine needs a texture source"):
        draw_texture(_Bank(0), 8, g, owner="Mine")
