"""Where things live: the data root, the figures folder, the repository root."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "ADLIB_DATA"


def repo_root() -> Path:
    """The checkout that holds this package (for an editable install), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument if given, else ``$ADLIB_DATA``, else ``<repo>/data``.

    Datasets live in sub-folders of it (``mvtec/``, ``visa/``, ``synth/``, ...; see
    :data:`adlib.data.DATASETS` for the folder names each dataset is found under).
    """
    if root not in (None, ""):
        return Path(root).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return repo_root() / "data"


def figures_dir(sub: str | None = None) -> Path:
    """``<repo>/figures[/sub]`` (a rehearsal's: ``<repo>/runs/rehearsal/figures[/sub]``,
    :mod:`adlib.rehearsal`), created if missing."""
    from . import rehearsal

    d = rehearsal.root() / "figures" if rehearsal.active() else repo_root() / "figures"
    if sub:
        d = d / sub
    d.mkdir(parents=True, exist_ok=True)
    return d
