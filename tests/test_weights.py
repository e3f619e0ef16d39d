"""`adlib weights list|check|import` and `adlib data info` as the paper profile's readiness check:
offline, with tiny fake weight files whose keys and shapes come from timm on the meta device."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import adlib.weights as W
from adlib.backbones import BACKBONES, FeatureExtractor, how_to_provide
from adlib.cli import main

TINY = ("test_resnet.r160_in1k", "test_efficientnet.r160_in1k")  # timm's test models: < 1 M parameters


def zeros_state(spec: W.WeightsSpec, skip_optional: bool = True) -> dict[str, torch.Tensor]:
    """A state dict with ``spec``'s keys and shapes (zeros), as a weights file would hold."""
    return {k: torch.zeros(s) for k, s in spec.shapes.items() if not (skip_optional and k in spec.optional)}


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Two tiny backbones standing in for the paper profile's needs; an empty weights dir and HF cache."""
    specs = [W.spec_for(t, t.split(".")[0], ("glass",)) for t in TINY]
    monkeypatch.setattr(W, "needed", lambda profile="paper": specs)
    monkeypatch.setenv("ADLIB_WEIGHTS_DIR", str(tmp_path / "wd"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return specs


def test_list_is_derived_from_the_paper_configs(monkeypatch):
    specs = {s.tag: s for s in W.needed()}
    assert "wide_resnet50_2.tv_in1k" in specs and "glass" in specs["wide_resnet50_2.tv_in1k"].used_by
    assert {"patchcore", "simplenet"} <= set(specs["wide_resnet50_2.tv_in1k"].used_by)
    assert "adl" in specs["resnet18.tv_in1k"].used_by and "adtr" in specs["tf_efficientnet_b4.in1k"].used_by
    assert any("Table 5" in u for u in specs["resnet101.tv_in1k"].used_by)  # GLASS Table 5 rows
    assert any("Table 4(c)" in u for u in specs["tf_efficientnet_b0.in1k"].used_by)  # ADTR Table 4 (c)
    wrn = specs["wide_resnet50_2.tv_in1k"]
    assert wrn.params == 68_883_240 and wrn.shapes["conv1.weight"] == (64, 3, 7, 7)
    assert wrn.file_name == "wide_resnet50_2.tv_in1k.safetensors" and wrn.hub_repo == "timm/wide_resnet50_2.tv_in1k"
    assert wrn.url_sha256_prefix == "95faca4d"  # torchvision's file name carries its SHA-256 prefix
    assert all(s.as_dict()["sha256"] == "unknown" for s in specs.values())  # not invented
    # the list follows the code: another default tag is what the list then asks for
    monkeypatch.setitem(BACKBONES, "wide_resnet50_2", "wide_resnet50_2.racm_in1k")
    assert "wide_resnet50_2.racm_in1k" in {s.tag for s in W.needed()}


def test_list_cli_table_and_json(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "wide_resnet50_2.tv_in1k" in out and "timm/wide_resnet50_2.tv_in1k/resolve/main/model.safetensors" in out
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"tag", "file", "hub_repo", "size_bytes", "sha256", "params"} <= set(rows[0])


def test_check_finds_weights_dir_hf_cache_and_dir(tiny, tmp_path, capsys):
    a, b = tiny
    assert [r.status for r in W.check()] == ["missing", "missing"]
    assert main(["weights", "check"]) == 1
    # a in the weights dir, b in a Hugging Face cache folder layout
    (tmp_path / "wd").mkdir()
    save_file(zeros_state(a), str(tmp_path / "wd" / a.file_name))
    repo = tmp_path / "hf" / ("models--" + b.hub_repo.replace("/", "--"))
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file(zeros_state(b), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    rows = W.check()
    assert [(r.status, r.where) for r in rows] == [("ready", "weights dir"), ("ready", "hf cache")]
    assert main(["weights", "check"]) == 0
    # a wrong file where adlib looks is "bad", and the exit status says so
    save_file({"x": torch.zeros(2)}, str(tmp_path / "wd" / a.file_name))
    (r,) = [r for r in W.check() if r.spec.tag == a.tag]
    assert r.status == "bad" and "missing" in r.detail and "adlib would load this file" in r.detail
    assert main(["weights", "check"]) == 1
    # --dir: found there, to be imported
    (tmp_path / "wd" / a.file_name).unlink()
    other = tmp_path / "usb"
    other.mkdir()
    torch.save(zeros_state(a), other / f"{a.tag}.pth")
    (r,) = [r for r in W.check(other) if r.spec.tag == a.tag]
    assert r.status == "in --dir" and "adlib weights import" in r.detail
    capsys.readouterr()
    assert main(["weights", "check", "--dir", str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "in --dir"


def test_import_converts_pth_files_it_and_records_sha256(tiny, tmp_path, capsys):
    a, _ = tiny
    src = tmp_path / "download.pth"
    wrapped = {"state_dict": {"module." + k: v for k, v in zeros_state(a).items()}}
    torch.save(wrapped, src)
    assert main(["weights", "import", str(src)]) == 0
    dest = tmp_path / "wd" / a.file_name
    assert f"-> {dest}" in capsys.readouterr().out
    assert set(load_file(str(dest))) == set(a.shapes) - a.optional
    manifest = json.loads((tmp_path / "wd" / W.MANIFEST).read_text())
    assert manifest[a.tag]["source_sha256"] == W.sha256(src) and manifest[a.tag]["sha256"] == W.sha256(dest)
    assert manifest[a.tag]["converted"] is True
    assert [r.status for r in W.check()][0] == "ready"
    assert not list((tmp_path / "wd").glob(".*partial"))  # atomic: no temporary left behind
    # a clean safetensors file is copied byte for byte (its SHA-256 kept); another one needs --force
    st = tmp_path / "model.safetensors"
    save_file({k: v + 1 for k, v in zeros_state(a).items()}, str(st))
    with pytest.raises(W.WeightsImportError, match="exists with other content.*--force"):
        W.import_file(st)
    entry = W.import_file(st, force=True)
    assert entry.replaced and not entry.converted and W.sha256(dest) == W.sha256(st)
    assert W.import_file(st).note == "already there, identical"
    # --to another folder: filed there, with how to make adlib look there
    capsys.readouterr()
    assert main(["weights", "import", str(st), "--to", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / a.file_name).is_file()
    assert "set ADLIB_WEIGHTS_DIR=" in capsys.readouterr().out


def test_import_refuses_a_file_that_matches_no_needed_backbone(tiny, tmp_path, capsys):
    a, b = tiny
    wrong = tmp_path / "wrong.pth"
    torch.save({"a.weight": torch.zeros(3, 3)}, wrong)
    near = tmp_path / "near.safetensors"
    sd = zeros_state(b)
    key = next(iter(sd))
    sd[key] = torch.zeros(1, 1)
    save_file(sd, str(near))
    assert main(["weights", "import", str(wrong), str(near)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("adlib: refused: ") for line in err)
    assert "wrong.pth matches no backbone" in err[0] and "closest:" in err[0]
    assert "near.safetensors matches no backbone" in err[1] and f"closest: {b.tag}" in err[1]
    assert f"{key} is 1x1 in the file" in err[1]
    assert not (tmp_path / "wd").exists() or not list((tmp_path / "wd").iterdir())
    # not a state dict at all, and a file named like the original download whose digest differs
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(W.WeightsImportError, match="junk.pth: cannot be read"):
        W.import_file(tmp_path / "junk.pth")
    named = dataclasses.replace(a, url="https://example.org/test_resnet-deadbeef.pth")
    fake = tmp_path / "test_resnet-deadbeef.pth"
    torch.save(zeros_state(a), fake)
    with pytest.raises(W.WeightsImportError, match="does not start with deadbeef"):
        W.import_file(fake, specs=[named])
    with pytest.raises(W.WeightsImportError, match="--tag nope is not a backbone"):
        W.import_file(fake, tag="nope")


def test_imported_file_is_what_the_backbone_loads(monkeypatch, tmp_path):
    """The real paper spec of the smallest needed backbone (EfficientNet-B0, ADTR Table 4 (c)):
    a zero file imported by the CLI is then loaded by FeatureExtractor from the weights dir."""
    monkeypatch.setenv("ADLIB_WEIGHTS_DIR", str(tmp_path / "wd"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = next(s for s in W.needed() if s.tag == "tf_efficientnet_b0.in1k")
    src = tmp_path / "b0.pth"
    torch.save(zeros_state(spec), src)
    assert main(["weights", "import", str(src)]) == 0
    fx = FeatureExtractor("efficientnet_b0", layers=(1,), pretrained=True)
    assert fx.info.weights.startswith(f"file:{tmp_path / 'wd' / spec.file_name} sha256:")
    assert all(float(p.abs().sum()) == 0 for p in fx.model.parameters())


def test_missing_weights_error_points_at_the_commands():
    msg = how_to_provide("wide_resnet50_2.tv_in1k")
    assert "adlib weights list" in msg and "adlib weights import ~/Downloads/model.safetensors" in msg
    assert "adlib weights check" in msg and "--set weights_file=PATH" in msg
    assert "https://huggingface.co/timm/wide_resnet50_2.tv_in1k/resolve/main/model.safetensors" in msg


# -- data info: the paper profile's readiness ---------------------------------------------------


def test_notebook_needs_cover_every_notebook():
    from adlib.paths import repo_root
    from adlib.readiness import notebook_needs

    needs = notebook_needs("paper")
    on_disk = {
        p.relative_to(repo_root() / "notebooks").with_suffix("").as_posix()
        for p in (repo_root() / "notebooks").rglob("*.ipynb")
    }
    assert {n.notebook for n in needs} == on_disk
    by = {(n.notebook, n.dataset): n for n in needs}
    assert ("glass/03_main_tables", "wfdd") in by and ("pouta/02_main_tables", "dagm") in by
    assert by[("glass/02_tsne", "mvtec")].categories == ("hazelnut",)
    assert by[("glass/03_main_tables", "dtd")].role == "texture source"


def test_data_info_readiness_with_some_datasets_present(tmp_path, monkeypatch, capsys):
    from test_data_layouts import make_mvtec, make_textures

    monkeypatch.setenv("ADLIB_WEIGHTS_DIR", str(tmp_path / "wd"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "data"
    make_mvtec(root / "mvtec", "hazelnut", n_train=3, n_good=2, defects={"crack": 2})
    make_mvtec(root / "mvtec", "bottle", n_train=2, n_good=1, defects={"crack": 1})
    make_textures(root / "dtd", classes=("banded", "woven"), n=3)
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "== mvtec" in out and "2 texture classes, 6 images: banded (3), woven (3)" in out
    assert "paper profile readiness" in out
    line = next(x for x in out.splitlines() if x.startswith("mvtec "))
    assert "present: 2/15 categories, 5 train, 6 test" in line and "missing categories: cable" in line
    assert next(x for x in out.splitlines() if x.startswith("visa ")).split()[3] == "missing"
    assert "dtd       texture source" in out and "present: 2 categories, 6 images" in out
    assert "glass/02_tsne" in out and "wide_resnet50_2.tv_in1k" in out and "ready: no" in out
    assert main(["data", "info", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ready = info["paper_profile"]
    assert ready["datasets"]["mvtec"]["present"] and ready["datasets"]["mvtec"]["train_images"] == 5
    assert not ready["datasets"]["visa"]["present"] and not ready["ready"]
    nbs = ready["notebooks"]
    assert nbs["glass/02_tsne"] == "ready" and nbs["adl/00_contamination"] == "ready"
    assert "visa, mpdd, wfdd, mad-man, mad-sys missing (rows marked missing)" in nbs["glass/03_main_tables"]
    assert nbs["adtr/02_main_tables"].startswith("cifar10 missing")
    assert {w["status"] for w in ready["weights"]} == {"missing"}
    # without hazelnut the one-category notebooks say so
    import shutil

    shutil.rmtree(root / "mvtec" / "hazelnut")
    from adlib.readiness import readiness

    assert "mvtec lacks hazelnut" in readiness(root).notebook_status()["glass/02_tsne"]
    # the former output alone
    assert main(["data", "info", str(root), "--datasets-only"]) == 0
    assert "readiness" not in capsys.readouterr().out
    # an empty data root: everything needed is listed as missing, and the exit status says nothing is there
    (tmp_path / "empty").mkdir()
    assert main(["data", "info", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert "nothing to run: mvtec missing" in captured.out and str(tmp_path / "empty") in captured.err
