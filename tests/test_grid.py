"""``adlib grid``: claims, the notebooks' runs and their states, bundles, the local worker pool with
a device list, the submitit path with its local executor (real subprocesses: submit, claim, run,
record, a killed task that resumes, a failing task that leaves failed.json) and the sbatch script
a Slurm submission writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from adlib import bill, claims, grid
from adlib.cli import main
from adlib.io import atomic_write_json
from adlib.results import Job, ResultsStore

#: PatchCore at 64 px on the shared benchmark: a run takes about a second
FAST = dict(resize=64, crop=64)
#: a tiny POUTA (an epoch method: a checkpoint after every epoch), a few seconds in all
EPOCHS = dict(
    image_size=32,
    widths=(4, 8, 8, 8),
    fcm_widths=(4, 4, 8, 8),
    aggregate_width=4,
    mapping_width=8,
    batch_size=4,
    epochs=6,
    lr=2e-3,
    lr_milestones=(2,),
    score_pool=7,
    bn_recalibration=2,
)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def _lock_free(path: Path) -> bool:
    """Whether no process holds the ``flock`` of ``path`` (a killed process's lock goes with it)."""
    import fcntl

    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return True


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_claim(run_dir: Path, **info) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"host": socket.gethostname(), "pid": os.getpid(), "task": "", "started": time.time(), "token": "t"}
    (run_dir / claims.CLAIM).write_text(json.dumps({**base, **info}))


# ----------------------------------------------------------------------------------------------
# claims


def test_a_claim_is_exclusive_reentrant_and_removed_after(tmp_path):
    run = tmp_path / "run"
    with claims.claim(run):
        held = claims.read(run)
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
        assert claims.live_holder(run)["token"] == held["token"]
        with claims.claim(run, wait=False):  # the holding thread may claim again
            pass
        assert (run / claims.CLAIM).exists()
        errors = []

        def other_thread():
            try:
                with claims.claim(run, wait=False):
                    pass
            except claims.Claimed as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and f"pid {os.getpid()}" in str(errors[0])
    assert not (run / claims.CLAIM).exists() and claims.live_holder(run) is None


def test_a_waiting_claim_gets_the_run_when_the_holder_releases_it(tmp_path):
    run, order = tmp_path / "run", []

    def holder():
        with claims.claim(run):
            order.append("held")
            time.sleep(0.4)
            order.append("released")

    t = threading.Thread(target=holder)
    t.start()
    _wait_for(lambda: order == ["held"], 10, "claim")
    with claims.claim(run, poll=0.05):
        order.append("second")
    t.join()
    assert order == ["held", "released", "second"]


def test_stale_claims_are_broken_and_live_ones_are_not(tmp_path, monkeypatch):
    # a holder on this host whose process is gone: stale at once
    dead = tmp_path / "dead"
    _write_claim(dead, pid=_dead_pid())
    assert "is gone" in claims.staleness(claims.read(dead))
    with claims.claim(dead, wait=False):
        assert claims.read(dead)["pid"] == os.getpid()
    # a holder on another machine with a fresh heartbeat: live, left alone
    far = tmp_path / "far"
    _write_claim(far, host="node-17", pid=4242)
    with pytest.raises(claims.Claimed, match="node-17 pid 4242"):
        with claims.claim(far, wait=False):
            pass
    # ... until its heartbeat is older than the limit
    monkeypatch.setenv(claims.ENV_STALE, "60")
    old = time.time() - 61
    os.utime(far / claims.CLAIM, (old, old))
    assert "no heartbeat" in claims.staleness(claims.read(far))
    with claims.claim(far, wait=False):
        assert claims.read(far)["host"] == socket.gethostname()
    # a Slurm task requeued after preemption takes back the claim of its earlier life at once
    requeued = tmp_path / "requeued"
    _write_claim(requeued, host="node-3", pid=99, task="812_4")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "812")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    assert "requeued" in claims.staleness(claims.read(requeued))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")  # another task of the array: the claim is live
    assert claims.live_holder(requeued) is not None
    monkeypatch.setenv(claims.ENV_STALE, "soon")
    with pytest.raises(ValueError, match="ADLIB_CLAIM_STALE_S"):
        claims.stale_after()


def test_the_heartbeat_keeps_a_claim_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT_S", 0.05)
    run = tmp_path / "run"
    with claims.claim(run):
        old = time.time() - 500
        os.utime(run / claims.CLAIM, (old, old))
        _wait_for(lambda: claims.read(run)["age"] < 5, 10, "heartbeat")


# ----------------------------------------------------------------------------------------------
# the runs, their states, bundles, slots


def test_the_grid_holds_the_notebooks_runs_each_once(benchmark):
    items = grid.entries("smoke", only="adtr", data_root=benchmark)
    jobs = [e.job for e in items]
    assert len(jobs) == len(set(map(bill.run_id, jobs)))
    for nb in ("adtr/02_main_tables", "adtr/03_ablations", "adtr/04_push_pull"):
        mine = {bill.run_id(e.job) for e in items if nb in e.notebooks}
        assert mine == {bill.run_id(j) for j in bill.notebook_jobs(nb, "smoke", benchmark)}
    # ADTR's normal-only run of the first category is asked for by three notebooks: one entry
    shared = [e for e in items if len(e.notebooks) > 1]
    assert shared and all(e.notebooks[0] < e.notebooks[1] for e in shared)
    assert len(grid.entries("smoke", only="adtr", data_root=benchmark, limit=3)) == 3
    with pytest.raises(ValueError, match="matches no notebook"):
        grid.entries("smoke", only="nope")


def test_list_shows_every_state_with_counts(benchmark, tmp_path, capsys):
    store = ResultsStore(tmp_path / "store")
    items = grid.entries("smoke", only="pouta/01", data_root=benchmark) + grid.entries(
        "smoke", only="glass/02", data_root=benchmark
    )
    assert len(items) == 3
    done, failed, running = (store.run_dir(e.job) for e in items)
    atomic_write_json(done / "record.json", {"method": "pouta", "config_hash": "x", "metrics": {"image_auroc": 1}})
    atomic_write_json(failed / grid.FAILED, {"error": "ValueError: no such category", "traceback": "..."})
    _write_claim(running, host="node-9", pid=7)
    assert [grid.state(store, e.job)[0] for e in items] == ["done", "failed", "running"]
    assert grid.state(store, items[1].job)[1] == "ValueError: no such category"
    common = ["--store", str(store.root), "--data-root", str(benchmark)]
    assert main(["grid", "list", "--only", "pouta/01", *common]) == 0
    out = capsys.readouterr().out
    assert "pouta/01_representations" in out and "done" in out and "failed" in out
    assert "1 done, 0 running, 1 failed, 0 to do (2 runs)" in out
    assert main(["grid", "list", "--only", "glass/02", "--json", *common]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["counts"]["running"] == 1 and "node-9 pid 7" in listed["runs"][0]["detail"]
    _write_claim(running, host=socket.gethostname(), pid=_dead_pid())  # its holder died: to do again
    assert grid.state(store, items[2].job) == ("to do", "")
    assert main(["grid", "run", "--only", "pouta/01", "--limit", "0", *common]) == 0
    assert "runs: nothing to do" in capsys.readouterr().out
    assert main(["grid", "run", "--only", "pouta/01", "--gpus", "0", "--devices", "cpu", *common]) == 2
    assert "do not go together" in capsys.readouterr().err
    if not torch.cuda.is_available():  # a GPU list on a machine without one: one line, nothing run
        assert main(["grid", "run", "--only", "pouta/01", "--gpus", "0,1", *common]) == 2
        assert "'cuda:0' requested but this machine has 0 CUDA device(s)" in capsys.readouterr().err


def test_runs_of_missing_datasets_are_listed_not_run(tmp_path):
    store = ResultsStore(tmp_path / "store")
    items = grid.entries("paper", only="glass/02", data_root=tmp_path / "empty")
    assert len(items) == 1 and not items[0].on_disk and items[0].job.dataset == "mvtec"
    assert "no data: mvtec" in grid.table(store, items)["detail"][0]
    assert grid.pending(store, items) == ([], items)


def test_runs_sharing_adtrs_normal_stage_are_bundled_normal_first(benchmark):
    pp = [e.job for e in grid.entries("smoke", only="adtr/04", data_root=benchmark)]
    scratch = Job.make("adtr", "synth", "wood", variant="pixel", adapt_from="scratch")
    pc = Job.make("patchcore", "synth", "wood")
    work = grid.bundles([*pp, scratch, pc])
    assert sorted(map(str, (j for b in work for j in b))) == sorted(map(str, [*pp, scratch, pc]))
    assert [scratch] in work and [pc] in work
    for b in work:
        if b in ([scratch], [pc]):
            continue
        keys = {(j.dataset, j.category, j.seed) for j in b}
        assert len(keys) == 1 and b[0].variant == "normal" and all(j.variant != "normal" for j in b[1:])
    per_key = {(j.dataset, j.category, j.seed) for j in pp}
    assert len(work) == len(per_key) + 2  # one bundle per (category, seed) of the study


def test_slots_split_devices_and_threads():
    s = grid.slots(devices=grid.parse_gpus("0,1"), per_device=2, cpus=8)
    assert [x.device for x in s] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"] and {x.threads for x in s} == {2}
    assert [x.device for x in grid.slots(devices=["cpu:0", "cpu:1"], cpus=2)] == ["cpu:0", "cpu:1"]
    assert [(x.device, x.threads) for x in grid.slots(workers=3, device="cpu", cpus=16)] == [("cpu", 1)] * 3
    with pytest.raises(ValueError, match="GPU indices"):
        grid.parse_gpus("0,a")
    with pytest.raises(ValueError, match="listed twice"):
        grid.parse_gpus("1,1")


# ----------------------------------------------------------------------------------------------
# the local backend: a device list, a killed batch rerun


def test_local_pool_with_a_device_list_killed_and_rerun_recomputes_nothing(benchmark, tmp_path, caplog):
    """Two workers on a fake device list (cpu:0, cpu:1) record two PatchCore runs; then a grid of
    those and an epoch method runs in a subprocess, killed (SIGKILL) once the epoch run has a
    checkpoint (the kill waits for nothing else, so a fast machine cannot finish the run first);
    the rerun resumes the epoch run from its checkpoint and leaves the others alone."""
    root = tmp_path / "store"
    longer = {**EPOCHS, "epochs": 60}  # still training when its first checkpoint appears
    slow = Job.make("pouta", "synth", "wood", **longer)
    quick = [Job.make("patchcore", "synth", c, **FAST) for c in ("grass", "nut")]
    store = ResultsStore(root, data_root=str(benchmark), progress=False)
    first = grid.run_local(store, grid.bundles(quick), grid.slots(devices=["cpu:0", "cpu:1"]), progress=False)
    assert sorted(o["status"] for o in first) == ["done", "done"]
    script = textwrap.dedent(f"""
        import logging, sys
        from adlib import grid
        from adlib.results import Job, ResultsStore
        store = ResultsStore({str(root)!r}, data_root={str(benchmark)!r}, progress=False)
        slow = Job.make("pouta", "synth", "wood", **{longer!r})
        quick = [Job.make("patchcore", "synth", c, resize=64, crop=64) for c in ("grass", "nut")]
        slots = grid.slots(devices=["cpu:0", "cpu:1"])
        grid.run_local(store, grid.bundles([slow, *quick]), slots, progress=False)
    """)
    stamps = {j: (store.run_dir(j) / "record.json").stat().st_mtime_ns for j in quick}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    slow_dir = store.run_dir(slow)
    try:
        _wait_for(
            lambda: proc.poll() is not None or (slow_dir / "checkpoints" / "last.pt").exists(),
            240,
            "a checkpoint",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert store.get(slow) is None, "kill came too late: the epoch run had finished"
    assert (slow_dir / claims.CLAIM).exists()  # left by the killed worker, which dies with its parent
    _wait_for(lambda: claims.live_holder(slow_dir) is None, 30, "end of the killed worker")
    _wait_for(lambda: _lock_free(slow_dir / ".lock"), 30, "the killed worker's file lock released")
    devices = {store.get(j)["environment"]["device"] for j in quick}
    assert devices <= {"cpu:0", "cpu:1"} and len(devices) >= 1
    assert {j: (store.run_dir(j) / "record.json").stat().st_mtime_ns for j in quick} == stamps  # cached
    caplog.set_level("INFO")
    outcomes = grid.run_local(store, grid.bundles([slow, *quick]), grid.slots(), progress=False)
    assert sorted(o["status"] for o in outcomes) == ["cached", "cached", "done"], outcomes
    assert "resumed from" in caplog.text and str(slow_dir) in caplog.text
    assert all(store.get(j) for j in [slow, *quick]) and not (slow_dir / claims.CLAIM).exists()
    assert {j: (store.run_dir(j) / "record.json").stat().st_mtime_ns for j in quick} == stamps
    again = grid.run_local(store, grid.bundles([slow, *quick]), grid.slots(), progress=False)
    assert [o["status"] for o in again] == ["cached"] * 3


# ----------------------------------------------------------------------------------------------
# the submitit path (its local executor: real subprocesses)


def test_submitit_tasks_record_fail_and_resume_after_a_kill(benchmark, tmp_path):
    """Two tasks through submitit's local executor: one with a PatchCore run (recorded) and a run
    whose category does not exist (failed.json with its error and traceback; the task goes on),
    one with an epoch run, killed after its first checkpoint; resubmitting the pending runs (failed
    ones left out) resumes the killed run from its checkpoint in a new task."""
    store = ResultsStore(tmp_path / "store", data_root=str(benchmark), progress=False)
    good = Job.make("patchcore", "synth", "grass", **FAST)
    bad = Job.make("patchcore", "synth", "carpet", **FAST)  # not in the benchmark
    slow = Job.make("pouta", "synth", "wood", **{**EPOCHS, "epochs": 60})  # still training at its first checkpoint
    items = [grid.Entry(j, ("test",)) for j in (good, bad, slow)]
    todo, no_data = grid.pending(store, items)
    assert todo == [good, bad, slow] and no_data == []
    logs = tmp_path / "logs"
    opts = grid.SlurmOptions(gpus_per_task=0, timeout_min=10)
    tasks = grid.submit(store, [[good, bad], [slow]], logs, cluster="local", options=opts)
    assert len(tasks) == 2
    slow_dir = store.run_dir(slow)
    _wait_for(lambda: (slow_dir / "checkpoints" / "last.pt").exists() or store.get(slow), 240, "checkpoint")
    holder = claims.read(slow_dir)
    assert holder is not None and holder["host"] == socket.gethostname()
    os.kill(int(holder["pid"]), signal.SIGKILL)  # the task that claimed the run
    tasks[1]._results_timeout_s = 1  # submitit waits 15 s for a dead task's result (as its own tests, shortened)
    outcomes = grid.gather(tasks)
    by_job = {o["job"]: o for o in outcomes}
    assert by_job[str(good)]["status"] == "done" and store.get(good) is not None
    assert by_job[str(bad)]["status"] == "failed" and "carpet" in by_job[str(bad)]["error"]
    failure = json.loads((store.run_dir(bad) / grid.FAILED).read_text())
    assert "carpet" in failure["error"] and "Traceback" in failure["traceback"] and failure["job"] == str(bad)
    assert store.get(slow) is None, "kill came too late: the epoch run had finished"
    assert [o["status"] for o in outcomes if o["job"] == f"task {tasks[1].job_id}"] == ["failed"]
    assert [grid.state(store, j)[0] for j in (good, bad, slow)] == ["done", "failed", "to do"]
    stamp = (store.run_dir(good) / "record.json").stat().st_mtime_ns
    # rerun: only the killed run is submitted again (the failed one is left with --skip-failed)
    todo, _ = grid.pending(store, items, skip_failed=True)
    assert todo == [slow]
    again = grid.submit(store, grid.bundles(todo), logs, cluster="local", options=opts)
    assert [o["status"] for o in grid.gather(again)] == ["done"]
    assert store.get(slow) is not None and (store.run_dir(good) / "record.json").stat().st_mtime_ns == stamp
    assert "resumed from" in Path(again[0].paths.stderr).read_text()
    assert grid.pending(store, items, skip_failed=True)[0] == []


def test_slurm_submission_asks_for_the_resources_and_only_unfinished_runs(benchmark, tmp_path, monkeypatch, capsys):
    """`adlib grid run --backend slurm` with a fake sbatch (and srun, which submitit looks for) on
    PATH: the script submitit writes asks for what was given, one array task per unfinished bundle."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch"
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.argv\ncp "$1" {record}.sh\necho "Submitted batch job 4711"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = ResultsStore(tmp_path / "store")
    items = grid.entries("smoke", only="adtr/04", data_root=benchmark)
    work = grid.bundles([e.job for e in items])
    for j in work[0]:  # the first bundle is finished
        atomic_write_json(store.run_dir(j) / "record.json", {"method": "adtr", "config_hash": "x", "metrics": {"a": 1}})
    logs = tmp_path / "logs"
    argv = ["grid", "run", "--backend", "slurm", "--only", "adtr/04", "--data-root", str(benchmark)]
    argv += ["--store", str(store.root), "--logs", str(logs), "--partition", "gpu", "--account", "lab"]
    argv += ["--time", "90", "--cpus-per-task", "8", "--gpus-per-task", "1", "--mem-gb", "32"]
    argv += ["--array-parallelism", "2", "--slurm-option", "qos=high"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"submitted {len(work) - 1} task(s) as 4711" in out
    script = Path(f"{record}.sh").read_text()
    for line in (
        f"#SBATCH --array=0-{len(work) - 2}%2",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=90",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --requeue",
        "#SBATCH --mem=32GB",
        "#SBATCH --signal=USR2@90",
        f"#SBATCH --output={logs}/%A_%a_0_log.out",
        "#SBATCH --job-name=adlib-grid",
    ):
        assert line in script.splitlines(), line
    assert "-m submitit.core._submit" in script
    assert len(list(logs.glob("4711_*_submitted.pkl"))) == len(work) - 1
    assert main(argv[:-2] + ["--slurm-option", "qos"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_a_grid_worker_does_not_wait_for_a_run_held_on_this_host(tmp_path):
    """``run_job(wait=False)``: a run whose folder lock another process (here: another open file)
    holds is left to it at once, as is one with a live claim; a plain run_job would wait."""
    from adlib.io import file_lock
    from adlib.results import run_job

    job = Job.make("patchcore", "synth", "wood", **FAST)
    run_dir = tmp_path / "run"
    with file_lock(run_dir / ".lock"):
        with pytest.raises(claims.Claimed):
            run_job(job, run_dir, data_root=str(tmp_path / "missing"), wait=False)
    out = grid.run_one(job, tmp_path / "store", data_root=str(tmp_path / "missing"))
    assert out["status"] == "failed" and "missing" in out["error"]  # no data here: failed.json, no claim left
    store = ResultsStore(tmp_path / "store")
    assert grid.read_failure(store.run_dir(job))["job"] == str(job)
    assert not (store.run_dir(job) / claims.CLAIM).exists()


def test_adlib_runs_moves_every_profiles_store(tmp_path, monkeypatch):
    from adlib.results import default_root

    monkeypatch.setenv("ADLIB_RUNS", str(tmp_path / "shared"))
    assert default_root("paper") == tmp_path / "shared" / "paper" / "results"
    assert ResultsStore.for_profile("smoke").root == tmp_path / "shared" / "smoke" / "results"


def test_a_bundle_trains_adtrs_normal_stage_once(benchmark, tmp_path):
    """A tiny ADTR's normal-only run and its adapted run (ADTR+, pixel labels) in one bundle: the
    adapted run takes the normal-only stage from the process (its record says so)."""
    tiny = dict(image_size=64, grid=4, k=4, width=16, heads=2, ffn=32, epochs=2, lr_milestones=(1,), adapt_epochs=1)
    tiny["seed"] = 7  # a stage no other test of this process trained
    normal = Job.make("adtr", "synth", "nut", variant="normal", **tiny)
    pixel = Job.make("adtr", "synth", "nut", variant="pixel", **tiny)
    (bundle,) = grid.bundles([pixel, normal])
    assert bundle == [normal, pixel]
    outs = grid.run_bundle(bundle, tmp_path / "store", data_root=str(benchmark))
    assert [o["status"] for o in outs] == ["done", "done"]
    store = ResultsStore(tmp_path / "store")
    assert store.get(normal)["model"]["normal_stage_cached"] is False
    assert store.get(pixel)["model"]["normal_stage_cached"] is True
