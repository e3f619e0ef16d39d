"""Training protocols: the few-shot draw (uniform, without replacement, seeded, independent of
file order), its use through the results store (key, record, train size) and the CLI."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from adlib.data import DataError, get_dataset
from adlib.data.synth import generate_benchmark
from adlib.protocols import apply_protocol, check_protocol, few_shot, few_shot_indices
from adlib.results import Job, ResultsStore

FAST = dict(resize=64, crop=64)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("proto_data")
    generate_benchmark(root, categories=["wood"], n_train=8, n_test_good=4, n_per_defect=2, size=64, progress=False)
    return root


def test_check_protocol_drops_none_and_names_bad_values():
    assert check_protocol(None) == {} and check_protocol({"shots": None}) == {}
    assert check_protocol({"shots": np.int64(4)}) == {"shots": 4}
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="shots must be a positive integer"):
            check_protocol({"shots": bad})
    with pytest.raises(ValueError, match=r"unknown protocol key\(s\) \['shot'\]"):
        check_protocol({"shot": 2})


def test_few_shot_indices_are_seeded_distinct_and_uniform():
    a = few_shot_indices(10, 4, seed=3)
    assert np.array_equal(a, few_shot_indices(10, 4, seed=3)) and len(set(a)) == 4 and list(a) == sorted(a)
    assert not np.array_equal(a, few_shot_indices(10, 4, seed=4))
    # uniform: over 3000 seeds every index is drawn about 3000 * 2/10 = 600 times
    counts = Counter(int(i) for s in range(3000) for i in few_shot_indices(10, 2, s))
    expected = 3000 * 2 / 10
    chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(10))
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001
    with pytest.raises(ValueError, match="cannot draw 11 shots from 10"):
        few_shot_indices(10, 11, 0)


def test_few_shot_keeps_k_normal_images_whatever_the_record_order(data_root):
    ds = get_dataset("synth", "wood", "train", root=data_root)
    sub = few_shot(ds, 3, seed=1)
    assert len(sub) == 3 and set(r.image_path for r in sub.records) <= set(r.image_path for r in ds.records)
    import dataclasses

    shuffled = dataclasses.replace(ds, records=ds.records[::-1])
    assert [r.image_path for r in few_shot(shuffled, 3, seed=1).records] == [r.image_path for r in sub.records]
    with pytest.raises(DataError, match="9 shots asked for, but it has only 8 normal images"):
        few_shot(ds, 9, seed=0)
    tr, te, detail = apply_protocol({"shots": 3}, ds, ds, seed=1)
    assert len(tr) == 3 and te is ds and detail["shots"] == 3 and len(detail["train_files"]) == 3


def test_a_few_shot_job_has_its_own_key_and_records_its_draw(data_root, tmp_path):
    full = Job.make("patchcore", "synth", "wood", **FAST)
    k2 = Job.make("patchcore", "synth", "wood", protocol={"shots": 2}, **FAST)
    assert "protocol" not in full.key() and k2.key()["protocol"] == {"shots": 2}
    assert k2.key()["config_hash"] != full.key()["config_hash"]
    assert Job.make("patchcore", "synth", "wood", protocol={"shots": 2}, **FAST) == k2
    assert "shots=2" in str(k2)
    store = ResultsStore(tmp_path / "store", data_root=str(data_root), progress=False)
    frame = store.run_many([full, k2])
    rec = store.get(k2)
    assert rec["train_images"] == 2 and store.get(full)["train_images"] == 8
    assert len(rec["protocol_detail"]["train_files"]) == 2
    assert frame.set_index("config_hash").loc[k2.key()["config_hash"], "shots"] == 2
    json.dumps(rec)


def test_cli_train_with_shots(data_root, tmp_path):
    from adlib.cli import main

    out = tmp_path / "models"
    assert main(["train", "patchcore", "--dataset", "synth", "--category", "wood", "--data-root", str(data_root),
                 "--out", str(out), "--shots", "2", "--seed", "1", "--set", "resize=64", "--set", "crop=64"]) == 0
    rec = json.loads((out / "patchcore" / "synth" / "wood" / "shots2-seed1" / "train.json").read_text())
    assert rec["train_images"] == 2 and rec["protocol"]["shots"] == 2


# ------------------------------------------------------------------------------- contamination


def test_check_protocol_contamination_defaults_and_errors():
    assert check_protocol({"contamination": 0.1}) == {"contamination": 0.1, "contamination_protocol": "leak-free"}
    assert check_protocol({"contamination": 0.2, "contamination_protocol": "released"})["contamination_protocol"] == "released"
    assert check_protocol({"contamination": 0}) == {} and check_protocol({"contamination": 0.0, "contamination_protocol": "released"}) == {}
    for bad in (1.0, -0.1, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="contamination must be a number in \\[0, 1\\)"):
            check_protocol({"contamination": bad})
    with pytest.raises(ValueError, match="contamination_protocol must be one of"):
        check_protocol({"contamination": 0.1, "contamination_protocol": "leaky"})
    with pytest.raises(ValueError, match="contamination_protocol given without contamination"):
        check_protocol({"contamination_protocol": "released"})


def test_contaminated_split_counts_noise_and_protocols(data_root):
    from adlib.data import ImageTransform
    from adlib.protocols import ContaminatedDataset, contaminated

    tf = ImageTransform(resize=32, crop=None, normalize=False)
    train = get_dataset("synth", "wood", "train", root=data_root, transform=tf)
    test = get_dataset("synth", "wood", "test", root=data_root, transform=tf)
    n_anom = int(test.labels.sum())
    tr, te, d = contaminated(train, test, 0.2, seed=0)
    k = int(0.2 / 0.8 * 8)  # = 2, the released count formula
    assert isinstance(tr, ContaminatedDataset) and len(tr) == 8 + k and d["n_contaminating"] == k
    assert len(te) == len(test) - k and int(te.labels.sum()) == n_anom - k and not d["leaked"]
    assert tr.labels.tolist() == [0] * (8 + k)  # training never sees which ones are anomalies
    hidden = {str(p) for p in (r.image_path for r in tr.records[8:])}
    assert not hidden & {str(r.image_path) for r in te.records}
    # a contaminating image: label 0, empty mask, the clean image plus small noise, the same every read
    s1, s2 = tr[8], tr[8]
    clean = test[[str(r.image_path) for r in test.records].index(s1.path)]
    assert s1.label == 0 and s1.defect_type == "good" and float(s1.mask.sum()) == 0.0
    assert torch.equal(s1.image, s2.image) and s1.image.shape == clean.image.shape
    diff = (s1.image - clean.image).abs()
    assert 0 < float(diff.mean()) < 0.1  # std 2/255 noise, min-max stretch and JPEG: changed, but slightly
    assert torch.equal(tr[0].image, train[0].image)  # normal images untouched
    # released protocol keeps them in the test set (leakage, flagged); other seeds draw others
    _, te_r, d_r = contaminated(train, test, 0.2, seed=0, protocol="released")
    assert len(te_r) == len(test) and d_r["leaked"] and d_r["contaminating_files"] == d["contaminating_files"]
    others = {tuple(contaminated(train, test, 0.2, seed=s)[2]["contaminating_files"]) for s in range(6)}
    assert len(others) > 1



def test_a_contaminated_job_runs_through_the_store_and_cli(data_root, tmp_path):
    job = Job.make("patchcore", "synth", "wood", protocol={"contamination": 0.2}, **FAST)
    assert job.key()["protocol"] == {"contamination": 0.2, "contamination_protocol": "leak-free"}
    assert Job.make("patchcore", "synth", "wood", protocol={"contamination": 0.0}, **FAST).key() == \
        Job.make("patchcore", "synth", "wood", **FAST).key()
    store = ResultsStore(tmp_path / "store", data_root=str(data_root), progress=False)
    rec = store.run(job)
    full_test = len(get_dataset("synth", "wood", "test", root=data_root))
    assert rec["train_images"] == 10 and rec["test_images"] == full_test - 2
    assert rec["protocol_detail"]["n_contaminating"] == 2 and rec["protocol"]["contamination_protocol"] == "leak-free"
    row = store.frame([job]).iloc[0]
    assert row["contamination"] == 0.2 and row["contamination_protocol"] == "leak-free"

    from adlib.cli import main

    out = tmp_path / "models"
    args = ["patchcore", "--dataset", "synth", "--category", "wood", "--data-root", str(data_root), "--out", str(out),
            "--contamination", "0.2", "--seed", "3", "--set", "resize=64", "--set", "crop=64"]
    assert main(["train", *args]) == 0 and main(["test", *args]) == 0
    run = out / "patchcore" / "synth" / "wood" / "eps0.2-seed3"
    assert json.loads((run / "train.json").read_text())["train_images"] == 10
    assert json.loads((run / "metrics.json").read_text())["test_images"] == full_test - 2
