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
def data_root(benchmark):
    return benchmark  # its wood category (tests/conftest.py)


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
    assert (
        main(
            [
                "train",
                "patchcore",
                "--dataset",
                "synth",
                "--category",
                "wood",
                "--data-root",
                str(data_root),
                "--out",
                str(out),
                "--shots",
                "2",
                "--seed",
                "1",
                "--set",
                "resize=64",
                "--set",
                "crop=64",
            ]
        )
        == 0
    )
    (run,) = (out / "patchcore" / "synth" / "wood").glob("s1-*")  # the results store's folder of the run
    rec = json.loads((run / "train.json").read_text())
    assert rec["train_images"] == 2 and rec["protocol"]["shots"] == 2


# ------------------------------------------------------------------------------- contamination


def test_check_protocol_contamination_defaults_and_errors():
    assert check_protocol({"contamination": 0.1}) == {"contamination": 0.1, "contamination_protocol": "leak-free"}
    assert (
        check_protocol({"contamination": 0.2, "contamination_protocol": "released"})["contamination_protocol"]
        == "released"
    )
    assert (
        check_protocol({"contamination": 0}) == {}
        and check_protocol({"contamination": 0.0, "contamination_protocol": "released"}) == {}
    )
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


def test_too_few_anomalies_released_draws_with_replacement_leak_free_names_the_class(data_root):
    from adlib.synthesis.contamination import ContaminationError

    train, test = _splits(data_root)
    n_normal = len(train)
    n_anom = int(test.labels.sum())
    eps = 0.6  # k = int(1.5 * n_normal) anomalies, more than the test set has
    k = int(eps / (1 - eps) * n_normal)
    assert k > n_anom
    tr, te, d = apply_protocol({"contamination": eps, "contamination_protocol": "released"}, train, test, seed=0)
    assert d["n_contaminating"] == k and d["n_available"] == n_anom and d["with_replacement"]
    assert d["n_distinct"] <= n_anom and len(d["contaminating_files"]) == k  # a file once per draw
    assert len(tr) == n_normal + k and len(te) == len(test) and d["leaked"]
    with pytest.raises(ContaminationError) as err:
        apply_protocol({"contamination": eps}, train, test, seed=0)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("synth/wood: leak-free")
    assert f"needs {k + 1} test anomalies" in msg and f"only {n_anom} are available" in msg
    # not short: no replacement, recorded as such
    _, _, d2 = apply_protocol({"contamination": 0.2, "contamination_protocol": "released"}, train, test, seed=0)
    assert not d2["with_replacement"] and d2["n_distinct"] == d2["n_contaminating"]


def test_a_contaminated_job_runs_through_the_store_and_cli(data_root, tmp_path):
    job = Job.make("patchcore", "synth", "wood", protocol={"contamination": 0.2}, **FAST)
    assert job.key()["protocol"] == {"contamination": 0.2, "contamination_protocol": "leak-free"}
    assert (
        Job.make("patchcore", "synth", "wood", protocol={"contamination": 0.0}, **FAST).key()
        == Job.make("patchcore", "synth", "wood", **FAST).key()
    )
    store = ResultsStore(tmp_path / "store", data_root=str(data_root), progress=False)
    rec = store.run(job)
    full_test = len(get_dataset("synth", "wood", "test", root=data_root))
    assert rec["train_images"] == 10 and rec["test_images"] == full_test - 2
    assert rec["protocol_detail"]["n_contaminating"] == 2 and rec["protocol"]["contamination_protocol"] == "leak-free"
    row = store.frame([job]).iloc[0]
    assert row["contamination"] == 0.2 and row["contamination_protocol"] == "leak-free"

    from adlib.cli import main

    out = tmp_path / "models"
    args = [
        "patchcore",
        "--dataset",
        "synth",
        "--category",
        "wood",
        "--data-root",
        str(data_root),
        "--out",
        str(out),
        "--contamination",
        "0.2",
        "--seed",
        "3",
        "--set",
        "resize=64",
        "--set",
        "crop=64",
    ]
    assert main(["train", *args]) == 0 and main(["test", *args]) == 0
    (run,) = (out / "patchcore" / "synth" / "wood").glob("s3-*")
    assert json.loads((run / "train.json").read_text())["train_images"] == 10
    assert json.loads((run / "record.json").read_text())["test_images"] == full_test - 2


# ------------------------------------------------------------------------------ real anomalies


@pytest.fixture(scope="module")
def data_root5(tmp_path_factory):
    """wood with 5 anomalies per defect type (enough for nested draws with a holdout of 4)."""
    root = tmp_path_factory.mktemp("proto_data5")
    generate_benchmark(root, categories=["wood"], n_train=8, n_test_good=4, n_per_defect=5, size=64, progress=False)
    return root


def _splits(root, size=32):
    from adlib.data import ImageTransform

    tf = ImageTransform(resize=size, crop=None, normalize=False)
    return (
        get_dataset("synth", "wood", "train", root=root, transform=tf),
        get_dataset("synth", "wood", "test", root=root, transform=tf),
    )


def _anomaly_counts(ds):
    return Counter(r.defect_type for r in ds.records if r.label == 1)


def test_check_protocol_real_anomalies_normalisation_and_errors():
    assert check_protocol({"real_anomalies": 2}) == {"real_anomalies": 2, "real_holdout": 2}
    assert check_protocol({"real_anomalies": np.int64(1), "real_holdout": 4}) == {
        "real_anomalies": 1,
        "real_holdout": 4,
    }
    assert check_protocol({"real_holdout": 3}) == {"real_anomalies": 0, "real_holdout": 3}  # holdout alone: N = 0
    assert check_protocol({"real_anomalies": 0, "real_holdout": 3}) == {"real_anomalies": 0, "real_holdout": 3}
    for trivial in (
        {"real_anomalies": 0},
        {"real_holdout": 0},
        {"real_anomalies": 0, "real_holdout": 0},
        {"real_anomalies": None, "real_holdout": None},
        {"real_anomalies": 0, "real_holdout": None},
    ):
        assert check_protocol(trivial) == {}, trivial
    with pytest.raises(ValueError, match=r"real_holdout \(2\) must be at least real_anomalies \(3\)"):
        check_protocol({"real_anomalies": 3, "real_holdout": 2})
    for key in ("real_anomalies", "real_holdout"):
        for bad in (-1, 1.5, 2.0, True, "2"):
            with pytest.raises(ValueError, match=f"{key} must be a non-negative integer, got {bad!r}"):
                check_protocol({key: bad})
    # with shots: fine; with contamination: rejected (unless one of them is the standard protocol)
    assert check_protocol({"shots": 4, "real_anomalies": 1}) == {"shots": 4, "real_anomalies": 1, "real_holdout": 1}
    with pytest.raises(ValueError, match="both protocols move test anomalies into training"):
        check_protocol({"contamination": 0.1, "real_anomalies": 1})
    with pytest.raises(ValueError, match="cannot be combined with contamination"):
        check_protocol({"contamination": 0.1, "real_holdout": 2})
    assert check_protocol({"contamination": 0.0, "real_anomalies": 1}) == {"real_anomalies": 1, "real_holdout": 1}
    assert check_protocol({"contamination": 0.1, "real_anomalies": 0}) == {
        "contamination": 0.1,
        "contamination_protocol": "leak-free",
    }


def test_real_anomalies_are_added_labelled_with_their_masks(data_root, caplog):
    from adlib.protocols import real_anomalies

    train, test = _splits(data_root)
    types = sorted(_anomaly_counts(test))
    assert len(types) == 4 and set(_anomaly_counts(test).values()) == {2}
    with caplog.at_level("WARNING", logger="adlib.protocols"):
        tr, te, d = real_anomalies(train, test, 1, seed=0, holdout=2)  # holds out every anomaly: warned
    assert sum("none is left in the test set" in r.getMessage() for r in caplog.records) == 4
    assert len(tr) == len(train) + 4 and _anomaly_counts(tr) == {t: 1 for t in types}
    assert len(te) == len(test) - 8 and _anomaly_counts(te) == {} and te.labels.tolist() == [0] * 4
    assert tr.records[: len(train)] == train.records and train.labels.sum() == 0 and len(test) == 12  # inputs untouched
    assert d["n_real_anomalies"] == 4 and d["n_held_out"] == 8 and d["test_images"] == len(te)
    assert len(d["real_anomaly_files"]) == 4 and set(d["real_anomaly_files"]) <= set(d["held_out_files"])
    assert all(f.split("/")[0] == "wood" and f.split("/")[1] == "test" for f in d["held_out_files"])
    test_index = {str(r.image_path): i for i, r in enumerate(test.records)}
    for i in range(len(train), len(tr)):
        s = tr[i]
        ref = test[test_index[s.path]]
        assert s.label == 1 and s.defect_type == ref.defect_type != "good"
        assert float(s.mask.sum()) > 0 and torch.equal(s.mask, ref.mask) and torch.equal(s.image, ref.image)
    assert tr[0].label == 0 and float(tr[0].mask.sum()) == 0.0
    # N = 0 with a holdout: the training set is the very same, the test set reduced
    tr0, te0, d0 = real_anomalies(train, test, 0, seed=0, holdout=1)
    assert tr0.records == train.records and d0["n_real_anomalies"] == 0 and len(te0) == len(test) - 4


def test_real_anomaly_draw_is_nested_seeded_order_free_and_leak_free(data_root5):
    from adlib.protocols import real_anomalies

    train, test = _splits(data_root5)
    types = sorted(_anomaly_counts(test))
    assert set(_anomaly_counts(test).values()) == {5}
    runs = {n: real_anomalies(train, test, n, seed=7, holdout=4) for n in range(5)}
    test_sets = {n: [str(r.image_path) for r in te.records] for n, (_, te, _) in runs.items()}
    added = {n: {str(r.image_path) for r in tr.records[len(train) :]} for n, (tr, _, _) in runs.items()}
    for n, (tr, te, d) in runs.items():
        assert test_sets[n] == test_sets[0]  # every N is evaluated on the same images
        assert _anomaly_counts(te) == {t: 1 for t in types} and len(te) == len(test) - 16
        assert _anomaly_counts(tr) == ({t: n for t in types} if n else {}) and len(tr) == len(train) + 4 * n
        assert not {str(r.image_path) for r in tr.records} & set(test_sets[n])  # leak-free
        assert d["held_out_files"] == runs[0][2]["held_out_files"]
    for n in range(4):
        assert added[n] < added[n + 1]  # nested: the N pick is in the N+1 pick
    # the held-out set is nested across M too, and does not depend on the record order
    held2 = set(real_anomalies(train, test, 0, seed=7, holdout=2)[2]["held_out_files"])
    assert held2 < set(runs[4][2]["held_out_files"])
    import dataclasses

    rev = dataclasses.replace(test, records=test.records[::-1])
    tr_rev, te_rev, _ = real_anomalies(train, rev, 2, seed=7, holdout=4)
    assert {str(r.image_path) for r in tr_rev.records[len(train) :]} == added[2]
    assert {str(r.image_path) for r in te_rev.records} == set(test_sets[2])
    # other seeds draw other anomalies
    draws = {tuple(real_anomalies(train, test, 2, seed=s, holdout=4)[2]["real_anomaly_files"]) for s in range(6)}
    assert len(draws) > 1
    # apply_protocol gives the same split
    tr_a, te_a, d_a = apply_protocol({"real_anomalies": 2, "real_holdout": 4}, train, test, seed=7)
    assert [r.image_path for r in tr_a.records] == [r.image_path for r in runs[2][0].records]
    assert [r.image_path for r in te_a.records] == [r.image_path for r in runs[2][1].records]
    assert d_a["real_anomalies"] == 2 and d_a["real_holdout"] == 4 and d_a["n_real_anomalies"] == 8
    json.dumps(d_a)


def test_real_anomalies_too_few_names_the_defect_type(data_root):
    from adlib.protocols import real_anomalies

    train, test = _splits(data_root)
    with pytest.raises(
        DataError,
        match=r"synth/wood/test: defect type 'color' has 2 anomalous test images, "
        r"fewer than real_holdout = 3 \(real_anomalies = 1\)",
    ):
        real_anomalies(train, test, 1, seed=0, holdout=3)
    with pytest.raises(DataError, match="fewer than real_holdout = 3"):
        apply_protocol({"real_anomalies": 3}, train, test, seed=0)
    with pytest.raises(ValueError, match=r"real_holdout \(1\) must be at least real_anomalies \(2\)"):
        real_anomalies(train, test, 2, seed=0, holdout=1)


def test_real_anomalies_with_shots_and_not_with_contamination(data_root):
    train, test = _splits(data_root)
    tr, te, d = apply_protocol({"shots": 3, "real_anomalies": 1}, train, test, seed=1)
    assert [r.image_path for r in tr.records[:3]] == [r.image_path for r in few_shot(train, 3, seed=1).records]
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 1, 1] and len(d["train_files"]) == 3
    assert d["n_real_anomalies"] == 4 and len(te) == len(test) - 4 and d["test_images"] == len(te)
    with pytest.raises(ValueError, match="both protocols move test anomalies into training"):
        apply_protocol({"contamination": 0.2, "real_anomalies": 1}, train, test, seed=1)


def test_real_anomalies_job_key():
    full = Job.make("patchcore", "synth", "wood", **FAST)
    job = Job.make("patchcore", "synth", "wood", protocol={"real_anomalies": 1, "real_holdout": 2}, **FAST)
    assert job.key()["protocol"] == {"real_anomalies": 1, "real_holdout": 2}
    assert job.key()["config_hash"] != full.key()["config_hash"]
    assert (
        job.key()["config_hash"]
        != Job.make("patchcore", "synth", "wood", protocol={"real_anomalies": 1}, **FAST).key()["config_hash"]
    )
    assert Job.make("patchcore", "synth", "wood", protocol={"real_anomalies": 2}, **FAST) == Job.make(
        "patchcore", "synth", "wood", protocol={"real_anomalies": 2, "real_holdout": 2}, **FAST
    )
    assert Job.make("patchcore", "synth", "wood", protocol={"real_anomalies": 0}, **FAST).key() == full.key()
    assert "real_anomalies=1" in str(job) and "real_holdout=2" in str(job)
