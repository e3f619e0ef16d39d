"""The methods: GLASS (and SimpleNet), PatchCore, and later POUTA (with Vanilla), ADL, ADTR and DRAEM.

One way to make any of them: :func:`build` (name, profile, config overrides); one prediction
structure (:class:`Prediction`) and one evaluation (:func:`evaluate`); :func:`load` restores a
saved model of any method.
"""

from __future__ import annotations

import os

from .base import (
    MODELS,
    NAMES,
    Prediction,
    available_models,
    available_names,
    build,
    display_name,
    evaluate,
    register,
    resolve_name,
)


def load(path: str | os.PathLike):
    """Load a model saved with ``model.save(path)``, whatever its method."""
    from .base import _load_all, load_checkpoint_file

    _load_all()
    state = load_checkpoint_file(path)
    name = state.get("name") if isinstance(state, dict) else None
    if name not in MODELS:
        raise ValueError(f"{path}: not an adlib model checkpoint (method {name!r}; known: {', '.join(sorted(MODELS))})")
    return MODELS[name].load(path)


__all__ = [
    "MODELS",
    "NAMES",
    "Prediction",
    "available_models",
    "available_names",
    "build",
    "display_name",
    "evaluate",
    "load",
    "register",
    "resolve_name",
]
