"""nbval set-up: importing adlib here, before nbval starts the kernels, writes the reference CPU
numerics (adlib.numerics) into the environment the kernels inherit, so the checked notebooks run
under the same numerics as `adlib reproduce`.

With pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``: two notebooks at a time, each
notebook's cells on one worker, in order) the notebooks are handed out longest first, by the
duration recorded in their committed outputs (:func:`adlib.reproduce.expected_seconds`); runs
that two notebooks share are trained once (the results store locks each run)."""

from pathlib import Path

import adlib  # noqa: F401  (side effect: adlib.numerics.apply_env)
from adlib.reproduce import expected_seconds


def pytest_collection_modifyitems(session, config, items):
    seconds: dict[Path, float] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in seconds:
            seconds[path] = expected_seconds(path)
    # stable: the cells of one notebook keep their order
    items.sort(key=lambda item: -seconds[Path(str(item.fspath))])
