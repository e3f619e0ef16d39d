"""The results store: keys, caching, records with provenance, failures reported per run, a batch
killed mid-way and restarted, and the side-by-side tables built from it."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from adlib import reported, tables
from adlib.results import Job, ResultsStore, RunFailed, config_hash, summarize, weights_id

# PatchCore at 64 px on 8 training images: a run takes about a second.
FAST = dict(resize=64, crop=64)


@pytest.fixture(scope="module")
def data_root(benchmark):
    return benchmark  # wood, grass, nut at 64 px (tests/conftest.py)


def test_job_key_tracks_every_setting_but_not_the_data_root():
    a = Job.make("glass", "synth", "wood")
    assert a.key() == Job.make("glass", "synth", "wood", variant="m").key()  # GLASS's default variant
    assert a.label == "glass-m" and a.key()["variant"] == "m"
    assert a.key()["config_hash"] != Job.make("glass", "synth", "wood", epochs=3).key()["config_hash"]
    assert a.key()["config_hash"] != Job.make("glass", "synth", "wood", seed=1).key()["config_hash"]
    assert Job.make("glass", "synth", "wood", data_root="/x").key() == a.key()
    assert Job.make("glass", "synth", "wood", layers=["layer2"]) == Job.make(
        "glass", "synth", "wood", layers=("layer2",)
    )
    assert a.key()["weights"] == "random-init:resnet18 seed=0"
    assert Job.make("glass", "synth", "wood", profile="paper").key()["weights"] == "timm:wide_resnet50_2.tv_in1k"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        Job.make("nope", "synth", "wood").key()
    with pytest.raises(ValueError, match="epochz"):
        Job.make("glass", "synth", "wood", epochz=3).key()


def test_config_hash_and_weights_id_by_hand():
    assert config_hash({"a": 1, "b": (1, 2)}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash({"a": 1, "data_root": "/p"}) == config_hash({"a": 1, "data_root": "/q"})
    assert weights_id({}) == "none"
    assert weights_id({"backbone": "resnet18", "pretrained": True, "weights_file": "/w/r18.pth"}) == "file:r18.pth"
    assert (
        weights_id({"backbone": "resnet18", "pretrained": True, "backbone_tag": "resnet18.a1_in1k"})
        == "timm:resnet18.a1_in1k"
    )


def test_run_writes_a_record_with_provenance_and_is_cached(data_root, tmp_path):
    store = ResultsStore(tmp_path / "store", data_root=str(data_root), progress=False)
    job = Job.make("patchcore", "synth", "wood", **FAST)
    rec = store.run(job)
    d = store.run_dir(job)
    assert d.parent == tmp_path / "store" / "patchcore" / "synth" / "wood"
    assert d.name == f"s0-{job.key()['config_hash']}"
    on_disk = json.loads((d / "record.json").read_text())
    assert on_disk["metrics"] == rec["metrics"] and 0.0 <= rec["metrics"]["image_auroc"] <= 1.0
    for k in ("method", "dataset", "category", "seed", "profile", "weights", "config_hash"):
        assert on_disk[k] == job.key()[k]
    assert on_disk["model"]["config"]["resize"] == 64 and on_disk["environment"]["torch"]
    assert on_disk["train_seconds"] > 0 and on_disk["test_images"] == 4 + 2 * 4  # wood has 4 defect types
    pred = store.prediction(job)
    assert pred["image_scores"].shape == (12,) and pred["maps"].shape == (12, 64, 64)
    assert set(pred["labels"].tolist()) == {0, 1}
    mtime = (d / "record.json").stat().st_mtime_ns
    assert store.run(job) == rec  # cache hit: nothing re-run or rewritten
    assert (d / "record.json").stat().st_mtime_ns == mtime
    frame = store.frame()
    assert (
        len(frame) == 1
        and frame.loc[0, "label"] == "patchcore"
        and frame.loc[0, "image_auroc"] == rec["metrics"]["image_auroc"]
    )
    model = store.model(job)
    assert model.memory_bank is not None


def test_failures_are_reported_per_run_and_the_others_still_run(data_root, tmp_path):
    store = ResultsStore(tmp_path / "store", data_root=str(data_root), progress=False)
    good = Job.make("patchcore", "synth", "wood", **FAST)
    bad = Job.make("patchcore", "synth", "carpet", **FAST)  # not in the built-in benchmark
    with pytest.raises(RunFailed) as err:
        store.run_many([bad, good])
    assert "patchcore synth/carpet" in str(err.value) and "carpet" in err.value.failures[bad]
    assert store.get(good) is not None and store.get(bad) is None
    frame = store.run_many([bad, good], raise_on_failure=False)
    assert list(frame["category"]) == ["wood"] and list(store.failures) == [bad]


def test_a_killed_batch_restarts_where_it_stopped(data_root, tmp_path):
    """Run three jobs in a subprocess, kill it (SIGKILL) once the first record exists, restart:
    the finished run is not redone (record untouched), the others complete, and the results equal
    those of an uninterrupted batch."""
    root = tmp_path / "store"
    cats = ["wood", "grass", "nut"]
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from adlib.results import Job, ResultsStore
        store = ResultsStore({str(root)!r}, data_root={str(data_root)!r}, progress=False)
        store.run_many([Job.make("patchcore", "synth", c, resize=64, crop=64) for c in {cats!r}])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ResultsStore(root, data_root=str(data_root), progress=False)
    jobs = [Job.make("patchcore", "synth", c, **FAST) for c in cats]
    first = store.run_dir(jobs[0]) / "record.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), "the subprocess finished no run within 120 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [j for j in jobs if store.get(j) is not None]
    assert 1 <= len(done_before) < 3, "kill came too late to interrupt the batch"
    stamps = {j: (store.run_dir(j) / "record.json").stat().st_mtime_ns for j in done_before}
    frame = store.run_many(jobs)
    assert len(frame) == 3
    for j in done_before:  # not re-run
        assert (store.run_dir(j) / "record.json").stat().st_mtime_ns == stamps[j]
    # no temporary files left behind by the atomic writes that did finish
    assert not [p for p in root.rglob("record.json*") if p.name != "record.json"]
    fresh = ResultsStore(tmp_path / "fresh", data_root=str(data_root), progress=False).run_many(jobs)
    pd.testing.assert_series_equal(
        frame.set_index("category")["image_auroc"], fresh.set_index("category")["image_auroc"]
    )


def test_worker_processes_give_the_same_numbers(data_root, tmp_path):
    jobs = [Job.make("patchcore", "synth", c, **FAST) for c in ("wood", "nut")]
    one = ResultsStore(tmp_path / "a", data_root=str(data_root), progress=False).run_many(jobs, workers=1)
    two = ResultsStore(tmp_path / "b", data_root=str(data_root), progress=False).run_many(jobs, workers=2)
    np.testing.assert_allclose(one["image_auroc"], two["image_auroc"], atol=1e-6)
    np.testing.assert_allclose(one["pixel_auroc"], two["pixel_auroc"], atol=1e-6)


def test_summarize_means_and_sds_over_seeds():
    f = pd.DataFrame(
        {"label": ["x", "x", "y"], "dataset": ["d"] * 3, "category": ["c"] * 3, "image_auroc": [0.6, 0.8, 0.5]}
    )
    s = summarize(f, metrics=("image_auroc",)).set_index("label")
    assert s.loc["x", "image_auroc"] == pytest.approx(0.7) and s.loc["x", "image_auroc_sd"] == pytest.approx(0.1)
    assert s.loc["x", "n"] == 2 and s.loc["y", "n"] == 1


def test_side_by_side_aligns_reported_and_reproduced_and_averages():
    rep = reported.load("glass", table="Table 1", dataset="mvtec")
    ours = pd.DataFrame(
        {
            "label": ["glass-m", "glass-m", "glass-m"],
            "dataset": ["mvtec", "mvtec", "synth"],
            "category": ["carpet", "grid", "wood"],
            "image_auroc": [0.9, 0.8, 0.5],
            "profile": ["paper", "paper", "smoke"],
            "weights": ["w"] * 3,
            "seed": [0] * 3,
            "config_hash": ["h"] * 3,
        }
    )
    t = tables.side_by_side(
        rep,
        ours,
        metric="image_auroc",
        methods=[("GLASS-m", "GLASS-m", "glass-m"), ("DSR", "DSR", None)],
        missing={"visa": "missing under data root"},
    )
    carpet = rep[(rep.method == "GLASS-m") & (rep.category == "carpet") & (rep.metric == "image_auroc")].value.item()
    assert t.loc[("mvtec", "carpet"), "GLASS-m paper"] == carpet
    assert t.loc[("mvtec", "carpet"), "GLASS-m ours"] == pytest.approx(90.0)
    assert t.loc[("mvtec", "average"), "GLASS-m ours"] == pytest.approx(85.0)  # mean of carpet and grid
    assert t.loc[("synth", "average"), "GLASS-m ours"] == pytest.approx(50.0) and np.isnan(
        t.loc[("synth", "wood"), "GLASS-m paper"]
    )
    assert t.loc[("visa", "average"), "status"] == "missing under data root"
    assert t["DSR ours"].isna().all() and t.loc[("mvtec", "average"), "DSR paper"] > 0
    cats = [c for d, c in t.index if d == "mvtec"]
    assert cats[-1] == "average" and len(cats) == 16
    assert "synth" in tables.provenance(ours) and "2 config" not in tables.provenance(ours)


def test_side_by_side_scales_reported_fractions_to_percent():
    rep = reported.load("adl", table="Table 1", dataset="mvtec")
    rep = rep[rep.setting == "noise=0.1"]
    ours = pd.DataFrame({"label": ["adl"], "dataset": ["mvtec"], "category": ["carpet"], "image_auroc": [0.5]})
    t = tables.side_by_side(rep, ours, metric="image_auroc", methods=[("ADL", "ADL", "adl")], reported_scale=100)
    printed = rep[(rep.method == "ADL") & (rep.category == "carpet")].value.item()
    assert 0 < printed < 1 and t.loc[("mvtec", "carpet"), "ADL paper"] == pytest.approx(100 * printed)
    assert t.loc[("mvtec", "carpet"), "ADL ours"] == pytest.approx(50.0)


def test_save_table_writes_csv_and_markdown(tmp_path):
    t = pd.DataFrame({"a paper": [99.12, np.nan]}, index=pd.Index(["x", "y"], name="category"))
    csv, md = tables.save_table(t, "t1", caption="Table 1 (smoke)", directory=tmp_path)
    assert pd.read_csv(csv)["a paper"].iloc[0] == 99.12
    text = md.read_text()
    assert text.startswith("Table 1 (smoke)") and "99.1" in text and "–" in text and text.count("Table 1 (smoke)") == 1
    # the notebook's view of the saved table: the caption above it (once), not only in figures/
    shown = tables.format_table(t)
    assert shown.startswith("Table 1 (smoke)\n\n|") and shown.count("Table 1 (smoke)") == 1
    assert not tables.format_table(t, caption=False).startswith("Table 1")
    assert tables.format_table(pd.DataFrame({"a": [1.0]})).startswith("|")  # never saved: no caption


def test_side_by_side_gives_sd_over_seeds_and_format_prints_mean_pm_sd():
    ours = pd.DataFrame(
        {
            "label": ["m"] * 4,
            "dataset": ["d"] * 4,
            "category": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "image_auroc": [0.9, 0.8, 0.7, 0.5],
        }
    )
    rep = pd.DataFrame(columns=["dataset", "category", "method", "metric", "value"])
    t = tables.side_by_side(rep, ours, metric="image_auroc", methods=[("M", None, "m")])
    assert t.loc[("d", "a"), "M ours"] == pytest.approx(85.0)
    assert t.loc[("d", "a"), "M ours sd"] == pytest.approx(np.std([90, 80], ddof=1))
    # the average row: the spread over seeds of the category mean (seed 0: 80, seed 1: 65)
    assert t.loc[("d", "average"), "M ours"] == pytest.approx(72.5)
    assert t.loc[("d", "average"), "M ours sd"] == pytest.approx(np.std([80, 65], ddof=1))
    md = tables.format_table(t)
    assert "85.0 ± 7.1" in md and "M ours sd" not in md
    one = tables.side_by_side(rep, ours[ours.seed == 0], metric="image_auroc", methods=[("M", None, "m")])
    assert "M ours sd" not in one.columns


def test_provenance_names_mixed_numerics():
    base = {
        "label": "m",
        "dataset": "d",
        "category": "a",
        "profile": "smoke",
        "weights": "w",
        "config_hash": "h",
        "image_auroc": 0.9,
    }
    same = pd.DataFrame(
        [{**base, "seed": s, "numerics": "reference/AVX2/cpu/1t torch 2.14.1 numpy 2.4.6"} for s in (0, 1)]
    )
    assert "WARNING" not in tables.provenance(same) and "numerics reference/AVX2" in tables.provenance(same)
    mixed = same.copy()
    mixed.loc[1, "numerics"] = "native/AVX512/cpu/2t torch 2.14.1 numpy 2.4.6"
    text = tables.provenance(mixed)
    assert "WARNING" in text and "2 different numerics" in text and "native/AVX512" in text
    # the mixture survives the mean over categories
    assert "WARNING" in tables.provenance(tables.dataset_level(mixed, ("image_auroc",)))


def test_a_job_running_elsewhere_is_waited_for_not_trained_twice(tmp_path):
    """Two processes needing one job (two notebooks side by side): the second blocks on the run
    directory's lock and returns the first one's record without training (here it could not:
    its data root does not exist)."""
    from concurrent.futures import ThreadPoolExecutor

    from adlib import results
    from adlib.io import atomic_write_json

    job = Job.make("patchcore", "synth", "wood", "smoke", 0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"label": "patchcore", "method": "patchcore", "config_hash": job.key()["config_hash"]}
    record["metrics"] = {"image_auroc": 0.5}
    with ThreadPoolExecutor(1) as ex:
        with results._job_lock(run_dir):
            fut = ex.submit(results.run_job, job, run_dir, data_root=str(tmp_path / "missing"), progress=False)
            time.sleep(0.5)
            assert not fut.done()  # waiting on the lock
            atomic_write_json(run_dir / results.RECORD, record)
        assert fut.result(timeout=30) == record
    # without a record, the waiting run does the work (and fails here: no data)
    (run_dir / results.RECORD).unlink()
    with pytest.raises(Exception, match="missing|not found|No such"):
        results.run_job(job, run_dir, data_root=str(tmp_path / "missing"), progress=False)


def test_a_serial_batch_runs_free_jobs_before_waiting_for_a_held_one(data_root, tmp_path):
    """Two notebooks side by side sharing a run: the batch that finds it held by the other process
    does its other jobs first, then waits for the held one and reads its record (not trained twice).
    Before, it blocked on the held job with its core idle; with that behaviour this test fails (the
    holder below releases only once the free job is finished, or after 60 s)."""
    import threading

    from adlib import results
    from adlib.io import atomic_write_json

    store = ResultsStore(tmp_path / "store", data_root=str(data_root), workers=1, progress=False)
    held, free = (Job.make("patchcore", "synth", c, **FAST) for c in ("wood", "nut"))
    run_dir = store.run_dir(held)
    run_dir.mkdir(parents=True)
    record = {"label": "patchcore", "method": "patchcore", "config_hash": held.key()["config_hash"]}
    record["metrics"] = {"image_auroc": 0.25}
    seen: dict[str, bool] = {}
    locked = threading.Event()

    def other_process():
        with results._job_lock(run_dir):
            locked.set()
            t0 = time.time()
            while store.get(free) is None and time.time() - t0 < 60:
                time.sleep(0.1)
            seen["free_finished_while_held"] = store.get(free) is not None
            atomic_write_json(run_dir / results.RECORD, record)

    th = threading.Thread(target=other_process)
    th.start()
    assert locked.wait(30)
    frame = store.run_many([held, free])
    th.join()
    assert seen == {"free_finished_while_held": True}
    assert not store.failures and len(frame) == 2
    assert store.get(held) == record  # the other process's record, read after waiting
    assert not (run_dir / "model.pt").exists()  # not trained here
    assert 0.0 <= store.get(free)["metrics"]["image_auroc"] <= 1.0


def test_a_config_field_added_later_keeps_the_former_hash_at_its_former_value():
    """ADL's ``reweight_reduction`` came after records were written: at ``"sum"`` (the former
    behaviour) the job hashes as before, set to the released ``"batch_mean"`` it is another job."""
    from adlib.models.adl import ADLConfig
    from adlib.results import ADDED_FIELDS

    cfg = ADLConfig.for_profile("smoke").as_dict()
    former = {k: v for k, v in cfg.items() if k != "reweight_reduction"}
    assert ADDED_FIELDS["reweight_reduction"] == cfg["reweight_reduction"] == "sum"
    assert config_hash(cfg) == config_hash(former)
    assert config_hash({**cfg, "reweight_reduction": "batch_mean"}) != config_hash(former)
    a = Job.make("adl", "synth", "wood", "smoke", 0)
    b = Job.make("adl", "synth", "wood", "smoke", 0, reweight_reduction="batch_mean")
    assert a.key()["config_hash"] != b.key()["config_hash"]


def test_worker_cap_for_notebooks_side_by_side(tmp_path, monkeypatch):
    """$ADLIB_MAX_WORKERS (set by `adlib reproduce --parallel N` and by nbval under xdist) caps
    every store's worker processes; at 1 the store runs its jobs in its own process."""
    from adlib.results import ENV_MAX_WORKERS, ResultsStore, capped_workers

    monkeypatch.delenv(ENV_MAX_WORKERS, raising=False)
    assert capped_workers(4) == 4 and capped_workers(0) == 1
    assert ResultsStore(tmp_path, workers=3).workers == 3
    monkeypatch.setenv(ENV_MAX_WORKERS, "1")
    assert capped_workers(4) == 1 and ResultsStore(tmp_path, workers=2).workers == 1
    monkeypatch.setenv(ENV_MAX_WORKERS, "8")
    assert capped_workers(2) == 2
    for bad in ("0", "two"):
        monkeypatch.setenv(ENV_MAX_WORKERS, bad)
        with pytest.raises(ValueError, match=rf"\$ADLIB_MAX_WORKERS='{bad}': expected a positive integer"):
            capped_workers(2)


def test_reproduce_env_helper_sets_and_restores_variables(monkeypatch):
    import os

    from adlib import reproduce

    monkeypatch.delenv("ADLIB_MAX_WORKERS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with reproduce.environ({"ADLIB_MAX_WORKERS": "1", "OMP_NUM_THREADS": "1"}):
        assert os.environ["ADLIB_MAX_WORKERS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
    assert "ADLIB_MAX_WORKERS" not in os.environ and os.environ["OMP_NUM_THREADS"] == "7"
    with reproduce.environ({}):
        assert "ADLIB_MAX_WORKERS" not in os.environ


def test_side_by_side_env_caps_workers_and_thread_pools(monkeypatch):
    """N notebooks side by side: each store's workers and each kernel's OpenMP/OpenBLAS/MKL threads
    at cores // N; a variable the user set is kept; nothing for one notebook at a time."""
    from adlib import results

    for k in (results.ENV_MAX_WORKERS, *results.THREAD_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(results.os, "cpu_count", lambda: 8)
    assert results.side_by_side_env(1) == {}
    env = results.side_by_side_env(2)
    assert env == {
        "ADLIB_MAX_WORKERS": "4",
        "OMP_NUM_THREADS": "4",
        "OPENBLAS_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
    }
    assert results.side_by_side_env(16)["OMP_NUM_THREADS"] == "1"
    assert "ADLIB_MAX_WORKERS" not in results.side_by_side_env(2, cap_workers=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert "OMP_NUM_THREADS" not in results.side_by_side_env(2)
