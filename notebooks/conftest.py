"""nbval set-up: importing adlib here, before nbval starts the kernels, writes the reference CPU
numerics (adlib.numerics) into the environment the kernels inherit, so the checked notebooks run
under the same numerics as `adlib reproduce`.

With pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``: two notebooks at a time, each
notebook's cells on one worker, in order) the notebooks are handed out longest first, by the
duration recorded in their committed outputs (:func:`adlib.reproduce.expected_seconds`); runs
that two notebooks share are trained once (the results store locks each run), and each
notebook's store gets ``cores // workers`` worker processes (``$ADLIB_MAX_WORKERS``, inherited by
the kernels; at 1 a notebook trains in its kernel) and each kernel's thread pools ``cores // workers``
threads, as under ``adlib reproduce --parallel`` (:func:`adlib.results.side_by_side_env`)."""

import os
from pathlib import Path

import adlib  # noqa: F401  (side effect: adlib.numerics.apply_env)
from adlib.reproduce import expected_seconds
from adlib.results import side_by_side_env

#: what an interrupted or failed `adlib reproduce` leaves beside a notebook is not checked
collect_ignore_glob = ["*.failed.ipynb", ".*.partial.ipynb"]


def pytest_configure(config):
    n = getattr(config.option, "numprocesses", None)  # pytest-xdist's -n (None without xdist)
    if isinstance(n, int):
        os.environ.update(side_by_side_env(n))


def pytest_collection_modifyitems(session, config, items):
    seconds: dict[Path, float] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in seconds:
            seconds[path] = expected_seconds(path)
    # stable: the cells of one notebook keep their order
    items.sort(key=lambda item: -seconds[Path(str(item.fspath))])
