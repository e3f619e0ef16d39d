"""Issue 18: every expected failure of ``adlib train`` / ``adlib test`` ends in one line on stderr
and a non-zero exit (``--debug`` / ``$ADLIB_DEBUG`` shows the traceback); invalid results records
count as unfinished; checkpoints are written atomically and read with a message that names the
file and how to recover."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from adlib.cli import main
from adlib.models.base import atomic_torch_save, load_checkpoint_file
from adlib.results import RECORD, Job, ResultsStore, read_record

TINY = ["--epochs", "1", "--set", "resize=32", "--set", "crop=32", "--set", "pretrain_embed_dim=16"]
TINY += ["--set", "target_embed_dim=16", "--set", "dsc_hidden=16"]


def _args(root, out, *extra):
    return ["glass", "--variant", "m", "--dataset", "mvtec", "--category", "wood", "--data-root", str(root),
            "--out", str(out), *TINY, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    import shutil

    from adlib.data.synth import generate_benchmark

    r = tmp_path_factory.mktemp("data")
    generate_benchmark(
        r, seed=4, categories=["wood"], n_train=2, n_test_good=1, n_per_defect=1, size=32, progress=False
    )
    shutil.copytree(r / "synth", r / "mvtec")
    return r


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [e for e in err if e.startswith("adlib: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there(root, tmp_path, capsys):
    assert main(["train", *_args(root, tmp_path, "--device", "cuda")]) == 2
    assert "CUDA is not available" in _one_line_error(capsys)


def test_missing_weights_file_and_the_advice_given_works(root, tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert main(["train", *_args(root, tmp_path, "--set", "pretrained=true", "--set", f"weights_file={missing}")]) == 2
    assert str(missing) in _one_line_error(capsys)


def test_a_truncated_or_empty_model_is_named_with_the_fix(root, tmp_path, capsys):
    assert main(["train", *_args(root, tmp_path)]) == 0
    (model,) = tmp_path.glob("glass-m/mvtec/wood/s0-*/model.pt")
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])
    capsys.readouterr()
    assert main(["test", *_args(root, tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert str(model) in line and "train the run again" in line
    model.write_bytes(b"")
    assert main(["test", *_args(root, tmp_path)]) == 2
    assert "is empty" in _one_line_error(capsys)
    # --debug (or $ADLIB_DEBUG) shows the traceback instead
    with pytest.raises(ValueError, match="is empty"):
        main(["--debug", "test", *_args(root, tmp_path)])
    # the advice works: delete the folder it names, train again, test
    import shutil

    shutil.rmtree(model.parent)
    assert main(["train", *_args(root, tmp_path)]) == 0 and main(["test", *_args(root, tmp_path)]) == 0


def test_invalid_records_count_as_unfinished(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    job = Job.make("patchcore", "synth", "wood", "smoke", 0)
    run = store.run_dir(job)
    run.mkdir(parents=True)
    for text in ("{}", "", '{"method": "patchcore", "config_hash": "x", "metrics": {}}', "[1, 2]", '{"metrics": {"a"'):
        (run / RECORD).write_text(text)
        with caplog.at_level(logging.WARNING, logger="adlib.results"):
            assert store.get(job) is None
        assert str(run / RECORD) in caplog.text and (run / (RECORD + ".invalid")).is_file()
        assert not (run / RECORD).exists() and store.records() == []
        caplog.clear()
    good = {"method": "patchcore", "config_hash": "x", "metrics": {"image_auroc": 0.5}}
    (run / RECORD).write_text(json.dumps(good))
    assert read_record(run / RECORD) == good and store.records() == [good]


def test_a_checkpoint_write_interrupted_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, path)
    calls = []
    real_fsync = __import__("os").fsync
    monkeypatch.setattr("os.fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    atomic_torch_save({"epoch": 2}, path)
    assert len(calls) >= 2  # the file, then its folder: durable before and after the rename

    def crash(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"epoch": 3}, path)
    assert load_checkpoint_file(path) == {"epoch": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left
