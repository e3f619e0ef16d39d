"""Issue 18, faults: a batch killed with ``kill -9`` leaves no orphan worker training on (each
worker of the results store dies with its parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import time
    from adlib.results import worker_pool
    with worker_pool(2) as ex:
        futs = [ex.submit(time.sleep, 120) for _ in range(2)]
        while len(ex._processes) < 2:
            time.sleep(0.1)
        time.sleep(1.0)
        print(" ".join(str(p) for p in ex._processes), flush=True)
        time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return False
    return " Z " not in state and "zombie" not in state


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_a_batch_leaves_no_orphan_workers():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_model_of_another_method_or_variant_is_not_tested_as_the_run(tmp_path, capsys):
    """A run folder holding another run's model (copied by hand) is refused with one line."""
    import shutil

    from adlib.cli import main
    from adlib.data.synth import generate_benchmark

    generate_benchmark(tmp_path / "data", seed=4, categories=["wood"], n_train=2, n_test_good=1, n_per_defect=1,
                       size=32, progress=False)  # fmt: skip
    common = ["--dataset", "synth", "--category", "wood", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path)]
    tiny = ["--epochs", "1", "--set", "resize=32", "--set", "crop=32", "--set", "pretrain_embed_dim=16",
            "--set", "target_embed_dim=16", "--set", "dsc_hidden=16"]  # fmt: skip
    for variant in ("m", "h"):
        assert main(["train", "glass", "--variant", variant, *common, *tiny]) == 0
    (m_run,) = tmp_path.glob("glass-m/synth/wood/s0-*")
    (h_run,) = tmp_path.glob("glass-h/synth/wood/s0-*")
    shutil.copy(h_run / "model.pt", m_run / "model.pt")
    capsys.readouterr()
    assert main(["test", "glass", "--variant", "m", *common, *tiny]) == 2
    err = capsys.readouterr().err
    assert "holds a glass (variant h) model, but the run is glass-m" in err and str(m_run) in err
    assert not (m_run / "record.json").exists()


BATCH = textwrap.dedent(
    """
    import sys
    from adlib.results import Job, ResultsStore
    store = ResultsStore(sys.argv[1], data_root=sys.argv[2], workers=2, progress=False)
    tiny = dict(resize=32, crop=32, pretrain_embed_dim=16, target_embed_dim=16, dsc_hidden=16)
    store.run_many([Job.make("patchcore", "synth", "wood", "smoke", 0, resize=32, crop=32),
                    Job.make("glass", "synth", "wood", "smoke", 0, variant="m", epochs=400, **tiny)])
    """
)


def test_kill_9_of_a_two_worker_batch_loses_nothing_finished(tmp_path):
    """A ``--jobs 2`` batch killed with SIGKILL once one run has finished and the other has written
    a checkpoint: no worker survives, the finished run is kept as it was (not redone), and a rerun
    resumes the other from its checkpoint."""
    import psutil

    from adlib.data.synth import generate_benchmark
    from adlib.results import Job, ResultsStore

    data = tmp_path / "data"
    generate_benchmark(
        data, seed=4, categories=["wood"], n_train=4, n_test_good=1, n_per_defect=1, size=32, progress=False
    )
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", BATCH, str(out), str(data)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        done = lambda: list(out.glob("patchcore/synth/wood/s0-*/record.json"))  # noqa: E731
        ckpt = lambda: list(out.glob("glass-m/synth/wood/s0-*/checkpoints/last.pt"))  # noqa: E731
        while not (done() and ckpt()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert done() and ckpt() and proc.poll() is None, "the batch did not reach the state to kill it in"
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        record = done()[0]
        before = record.read_bytes()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers and not any(_alive(p) for p in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert record.read_bytes() == before and not list(out.glob("glass-m/synth/wood/s0-*/record.json"))
    # the rerun finishes only what was left, resuming the interrupted run from its checkpoint
    store = ResultsStore(out, data_root=data, workers=1, progress=False)
    tiny = dict(resize=32, crop=32, pretrain_embed_dim=16, target_embed_dim=16, dsc_hidden=16)
    glass = Job.make("glass", "synth", "wood", "smoke", 0, variant="m", epochs=400, **tiny)
    start = ResultsStore(out).run_dir(glass) / "checkpoints" / "last.pt"
    import torch

    resumed_from = torch.load(start, map_location="cpu", weights_only=True)["epoch"]
    assert resumed_from >= 1
    frame = store.run_many([Job.make("patchcore", "synth", "wood", "smoke", 0, resize=32, crop=32), glass])
    assert len(frame) == 2 and record.read_bytes() == before
