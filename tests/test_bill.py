"""The bill before the run (adlib.bill, ``adlib reproduce --plan``): FLOPs, images, jobs, done runs, CLI."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from adlib import bill as billmod
from adlib.bill import Context, bill, notebook_jobs, part_flops, run_cost, run_id, run_sizes
from adlib.data import get_dataset
from adlib.models import build
from adlib.results import Job, ResultsStore

# ----------------------------------------------------------------------------------------------
# FLOPs: a network counted by hand


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))


# conv: 2 * C_out * H * W * C_in * k * k; linear: 2 * in * out (a multiply-add = 2 FLOPs)
CONV = 2 * 4 * 8 * 8 * 3 * 3 * 3  # 13824
LINEAR = 2 * 256 * 2  # 1024


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_part_flops_of_a_hand_counted_network(device):
    net = _tiny_net().to(device)
    assert part_flops(net, (1, 3, 8, 8), device=device) == CONV + LINEAR == 14848
    # backward: the linear layer's input and weight gradients, the convolution's weight gradient
    # (the input image needs no gradient)
    assert part_flops(net, (1, 3, 8, 8), backward=True, device=device) == 2 * CONV + 3 * LINEAR == 30720
    # a frozen convolution is not back-propagated through: only the linear weight gradient
    net[0].weight.requires_grad_(False)
    assert part_flops(net, (1, 3, 8, 8), backward=True, device=device) == CONV + 2 * LINEAR
    assert net[0].weight.grad is None and net[3].weight.grad is None  # no gradient left behind


class _Attention(nn.Module):
    """One self-attention layer through ``scaled_dot_product_attention`` (as ADTR's layers)."""

    def __init__(self, e: int = 8, heads: int = 2):
        super().__init__()
        self.qkv, self.out, self.heads = nn.Linear(e, 3 * e, bias=False), nn.Linear(e, e, bias=False), heads

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        return self.out(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, e))


def test_attention_is_counted_on_the_meta_device():
    """4 tokens of width 8: projections 2*4*8*24 + 2*4*8*8 = 2048, attention Q K^T and A V 2 * 2*4*4*8 = 512.
    The CPU's fused attention kernel is not counted by FlopCounterMode (2048 only): the bill counts on meta."""
    assert part_flops(_Attention().to("meta"), (1, 4, 8), device="meta") == 2048 + 512
    assert part_flops(_Attention(), (1, 4, 8), device="cpu") == 2048
    # backward: qkv weight (1536), out input and weight (2 x 512), attention (2 x 512)
    assert part_flops(_Attention().to("meta"), (1, 4, 8), backward=True, device="meta") == 2560 + 1536 + 1024 + 1024


def test_meta_counts_equal_real_counts_for_a_method_network():
    """The bill builds on the meta device (no compute): its counts equal a real CPU forward's."""
    cpu = build("patchcore", "smoke", pretrained=False, resize=64, crop=64)
    with torch.device("meta"):
        meta = build("patchcore", "smoke", pretrained=False, resize=64, crop=64)
    real = part_flops(cpu.features, (1, 3, 64, 64), device="cpu")
    assert real > 0
    assert part_flops(meta.features, (1, 3, 64, 64), device="meta") == real


# ----------------------------------------------------------------------------------------------
# images seen per method, by hand


def _meta(method, **kw):
    with torch.device("meta"):
        return build(method, "smoke", **kw)


def test_glass_workload_counts_test_set_selection_every_epoch():
    m = _meta(
        "glass",
        pretrained=False,
        resize=64,
        crop=64,
        epochs=3,
        batch_size=4,
        samples_per_epoch=4,
        samples_cap="exact",
        select_best_on_test=True,
        select_every=None,
        gas_steps=5,
        variant="m",
    )
    w = m.workload(n_train=10, n_test=6)
    assert w.train_images == 3 * 4  # 4 images an epoch (the cap), 3 epochs
    assert w.test_images == 6 * (3 + 2)  # every epoch, then the selected and the last epoch's weights
    rows = (64 // 8) ** 2  # layer2's grid
    assert w.passes == {"train": 12 * 2, "infer": 30, "discriminator_row": 12 * rows * (2 * 5 + 3)}
    # the released cap: the loop stops after the batch passing samples_per_epoch -> (4 // 4 + 1) * 4 = 8
    released = _meta("glass", pretrained=False, resize=64, crop=64, epochs=3, batch_size=4, samples_per_epoch=4,
                     samples_cap="released", variant="m")  # fmt: skip
    assert released.workload(n_train=10, n_test=6).train_images == 3 * 8
    assert released.workload(n_train=5, n_test=6).train_images == 3 * 5  # fewer images than the cap: all


def test_glass_h_recomputes_its_centre_and_simplenet_evaluates_every_fourth_epoch():
    h = _meta("glass", pretrained=False, resize=64, crop=64, epochs=2, samples_per_epoch=None, variant="h", las=False)
    w = h.workload(n_train=7, n_test=3)
    assert w.train_images == 14 and w.passes["train"] == 14  # no LAS image
    assert w.passes["infer"] == 3 + 2 * 7  # the test set once, the centre over the training images per epoch
    s = _meta("simplenet", pretrained=False, resize=64, crop=64, epochs=8, select_best_on_test=True)
    ws = s.workload(n_train=10, n_test=5)
    assert ws.train_images == 8 * 10
    assert ws.test_images == 5 * (8 // 4 + 2)
    assert ws.passes["discriminator_row"] == 80 * 64 * 3


def test_patchcore_pouta_adl_adtr_workloads():
    pc = _meta("patchcore", pretrained=False, resize=64, crop=64, coreset_ratio=0.1, projection_dim=16)
    w = pc.workload(n_train=10, n_test=4)
    rows, dim = 8 * 8, pc.features.dim
    n_rows, bank = 10 * rows, int(0.1 * 10 * rows)
    assert (w.train_images, w.test_images, w.passes) == (10, 4, {"infer": 14})
    assert w.extra_flops == 2 * n_rows * dim * 16 + 2 * n_rows * bank * 16 + 2 * 4 * rows * bank * dim
    assert w.extra_state_bytes == bank * dim * 4

    pouta = _meta("pouta", epochs=5).workload(n_train=12, n_test=3)
    assert (pouta.train_images, pouta.passes) == (60, {"train": 60, "infer": 3})

    adl = _meta("adl", epochs=4, steps_per_epoch=3, batch_size=2, bn_recalibration=5).workload(n_train=99, n_test=3)
    assert adl.train_images == 4 * 3 * 2 * 2  # normal half + pseudo-anomalies, whatever n_train
    assert adl.passes == {"train": 48, "infer": 3 + 5 * 4}

    adtr = _meta("adtr", epochs=6, adapt_epochs=4, variant="pixel", anomalies="confetti", anomaly_prob=0.5)
    w = adtr.workload(n_train=10, n_test=3)
    assert w.train_images == (6 + 4) * 10
    assert w.passes == {"extract": 10 + 20, "train": 100, "infer": 3}  # 4 epochs x 10 x 0.5 confetti images
    normal = _meta("adtr", epochs=6, adapt_epochs=4, variant="normal").workload(n_train=10, n_test=3)
    assert normal.passes == {"extract": 10, "train": 60, "infer": 3}


def test_run_sizes_follow_the_protocol(benchmark):
    ctx = Context("smoke", benchmark)
    base = Job.make("patchcore", "synth", "wood", "smoke", 0)
    train, test = run_sizes(base, ctx)
    types = [t for t in get_dataset("synth", "wood", "test", root=benchmark).summary() if t != "good"]
    assert len(types) == 4
    assert (train, test) == (8, 4 + 2 * 4)  # the fixture's benchmark: 8 train, 4 good + 2 per defect type
    assert run_sizes(Job.make("pouta", "synth", "wood", "smoke", 0, protocol={"shots": 2}), ctx) == (2, test)
    leak = Job.make("patchcore", "synth", "wood", "smoke", 0, protocol={"contamination": 0.2})
    k = int(0.2 / 0.8 * 8)  # 2 anomalies hidden among the training images, out of the test set
    assert run_sizes(leak, ctx) == (8 + k, test - k)
    held = Job.make("adtr", "synth", "wood", "smoke", 0, protocol={"real_anomalies": 1, "real_holdout": 2})
    assert run_sizes(held, ctx) == (8, test - 2 * 4)


# ----------------------------------------------------------------------------------------------
# the notebooks' runs


def test_notebook_jobs_are_the_notebooks_own(benchmark):
    """Built as the notebooks' code builds them (smoke profile, the built-in benchmark)."""
    from adlib.papers import adl, adtr, glass, pouta

    root = benchmark
    ids = lambda jobs: {run_id(j) for j in jobs}  # noqa: E731
    # glass/03
    cats, weak_cats = glass.defaults("03_main_tables", "smoke", categories=None, weak_categories=None)
    main = glass.plan(glass.MAIN_DATASETS["smoke"], root, cats)
    weak = glass.plan(glass.WEAK_DATASETS["smoke"], root, weak_cats)
    want = glass.main_jobs(main, "smoke", [0]) + glass.main_jobs(weak, "smoke", [0])
    pair = ("glass-m", "simplenet")
    want += glass.main_jobs(main, "smoke", [0, 1, 2], labels=pair) + glass.main_jobs(
        weak, "smoke", [0, 1, 2], labels=pair
    )
    sel_cats = glass.defaults("03_main_tables", "smoke", selection_categories=None)
    want += glass.selection_jobs(glass.plan(glass.MAIN_DATASETS["smoke"], root, sel_cats), "smoke", [0, 1, 2])
    got = notebook_jobs("glass/03_main_tables", "smoke", root)
    assert ids(got) == ids(want) and len(got) == len(ids(want))
    # pouta/03
    seeds, cats = pouta.defaults("03_few_shot", "smoke", seeds=None, categories=None)
    p4 = pouta.plan(pouta.DATASETS["table4"]["smoke"], root, cats)
    want = [j for js in pouta.few_shot_jobs(p4, "smoke", [2, 4, 8], seeds).values() for j in js]
    want += pouta.main_jobs(p4, "smoke", seeds[:1], labels=["pouta"])
    assert ids(notebook_jobs("pouta/03_few_shot", "smoke", root)) == ids(want)
    # adl/01 (with the notebook's filter of draws short of anomalies)
    seeds, cats, protocols = adl.defaults("01_main_table", "smoke", seeds=None, categories=None, protocols=None)
    grid = adl.protocol_grid(
        adl.plan(adl.DATASETS["smoke"], root, cats), "smoke", adl.TRAINED, [0.1, 0.15, 0.2], seeds, protocols
    )
    assert ids(notebook_jobs("adl/01_main_table", "smoke", root)) == ids(adl.runnable(grid, root))
    # adtr/04
    seeds, cats, alphas, ks = adtr.defaults("04_push_pull", "smoke", seeds=None, categories=None, alphas=None, ks=None)
    p = adtr.plan(adtr.DATASETS["main"]["smoke"], root, cats)
    want = [j for js in adtr.push_pull_jobs(p, "smoke", seeds, counts=[1, 2, 4], holdout=4).values() for j in js]
    want += [
        j
        for js in adtr.sensitivity_jobs(p, "smoke", seeds[:1], n=4, holdout=4, alphas=alphas, ks=ks).values()
        for j in js
    ]
    cj = adtr.push_pull_jobs(p, "smoke", [0, 1, 2], counts=[1, 2, 4], holdout=4)
    want += cj["normal-only"] + cj["pixel labels, confetti"]
    assert ids(notebook_jobs("adtr/04_push_pull", "smoke", root)) == ids(want)
    # notebooks that train nothing
    assert notebook_jobs("glass/01_synthesis", "smoke", root) == []


def test_paper_profile_without_data_uses_every_category(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    jobs = notebook_jobs("glass/03_main_tables", "paper", empty)
    per = pd.Series([j.dataset for j in jobs if j.seed == 0 and j.label == "patchcore"]).value_counts()
    assert per.to_dict() == {"mvtec": 15, "visa": 12, "mpdd": 6, "wfdd": 4, "mad-man": 15, "mad-sys": 5}
    # 4 labels x 57 categories at seed 0, GLASS-m and SimpleNet at seeds 1 and 2; the test-set selection
    # runs are the GLASS-m runs themselves (selection is the paper profile's default: one run folder)
    assert len(jobs) == 4 * 57 + 2 * 2 * 57
    assert {j.category for j in jobs if j.dataset == "mvtec"} == set(billmod.DATASET_FACTS["mvtec"].categories)
    with pytest.raises(ValueError, match="unknown notebook 'glass/99'"):
        notebook_jobs("glass/99", "paper", empty)


def test_mvtec_facts_sum_to_the_published_totals():
    cats = billmod.DATASET_FACTS["mvtec"].categories.values()
    assert sum(c[0] for c in cats) == 3629 and sum(c[1] + c[2] for c in cats) == 1725 and sum(c[3] for c in cats) == 73
    visa = billmod.DATASET_FACTS["visa"].categories.values()
    assert sum(c[0] for c in visa) == 8659 and sum(c[1] + c[2] for c in visa) == 2162


# ----------------------------------------------------------------------------------------------
# done runs, the bill, the command line


def test_a_finished_run_is_marked_done(benchmark, tmp_path):
    from adlib.io import atomic_write_json

    store = ResultsStore(tmp_path / "store")
    b0 = bill("smoke", benchmark, only="glass/02", store=store)
    assert (b0.total["runs"], b0.total["done"]) == (1, 0)
    job = Job.make("glass", "synth", "wood", "smoke", 0, variant="m")
    record = {**job.key(), "label": job.label, "metrics": {"image_auroc": 0.5}}
    atomic_write_json(store.run_dir(job) / "record.json", record)
    b1 = bill("smoke", benchmark, only="glass/02", store=store)
    assert b1.total["done"] == 1 and b1.total["gpu_hours_todo"] == 0.0 and b1.total["gpu_hours"] > 0
    assert b1.runs["done"].tolist() == [True]
    cost = run_cost(job, Context("smoke", benchmark), store)
    assert cost.done and cost.flops == pytest.approx(b1.total["flops"])


def test_bill_totals_count_a_shared_run_once(benchmark, tmp_path):
    b = bill("smoke", benchmark, only="pouta/0", store=ResultsStore(tmp_path), throughput=10.0)
    f = b.frame.set_index("notebook")
    nbs = ["pouta/01_representations", "pouta/02_main_tables", "pouta/03_few_shot", "pouta/04_ablations"]
    assert list(f.index) == nbs + ["total"]
    assert f.loc["total", "runs"] == f.loc[nbs, "runs"].sum() - f.loc[nbs, "shared"].sum() == len(b.runs)
    assert f.loc["total", "flops"] == pytest.approx(b.runs["flops"].sum())
    assert f.loc["total", "gpu_hours"] == pytest.approx(b.runs["flops"].sum() / 10e12 / 3600)
    assert (f["throughput_tflops"] == 10.0).all() and (f["throughput_source"] == "given").all()
    assert (f.loc[nbs, "sizes"] == "on disk").all()
    with pytest.raises(ValueError, match="--only 'nothing-like-this' matches no notebook"):
        bill("smoke", benchmark, only="nothing-like-this", store=ResultsStore(tmp_path))
    with pytest.raises(ValueError, match="--throughput must be a positive number"):
        bill("smoke", benchmark, only="pouta/01", throughput=0.0, store=ResultsStore(tmp_path))


def test_throughput_from_results(tmp_path):
    p = tmp_path / "RESULTS.md"
    p.write_text("| x |\nnothing measured\n")
    assert billmod.throughput_from_results(p) is None
    p.write_text("GPU run, H100: measured GPU training throughput: 41.5 TFLOPS (bench_glass)\n")
    assert billmod.throughput_from_results(p) == 41.5
    assert billmod.throughput_from_results(tmp_path / "absent.md") is None


def test_cli_plan_writes_the_csv_and_executes_nothing(tmp_path, monkeypatch, capsys):
    import adlib.reproduce
    from adlib.cli import main

    def never(*a, **k):
        raise AssertionError("--plan executed notebooks")

    monkeypatch.setattr(adlib.reproduce, "run_notebooks", never)
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "plan.csv"
    args = ["reproduce", "--profile", "paper", "--plan", "--csv", str(out), "--data-root", str(empty)]
    assert main(args + ["--only", "glass/02", "--throughput", "50"]) == 0
    printed = capsys.readouterr().out
    frame = pd.read_csv(out)
    assert list(frame.notebook) == ["glass/02_tsne", "total"]
    runs = pd.read_csv(tmp_path / "plan-runs.csv")
    assert runs["run"].tolist() == ["glass-m mvtec/hazelnut seed 0"]
    total = frame.set_index("notebook").loc["total"]
    assert total["runs"] == 1 and total["sizes"] == "expected" and total["throughput_tflops"] == 50.0
    # GLASS-m on MVTec AD hazelnut (391 training, 110 test images), 640 epochs of 400 images (the released
    # cap), the test set every epoch plus twice
    assert total["train_images"] == 640 * 391 and total["test_images"] == 110 * 642
    assert "total" in printed and "50 TFLOPS (given)" in printed and str(out) in printed
    assert "mvtec: expected sizes (15 categories)" in printed
    assert math.isclose(total["gpu_hours"], total["flops"] / 50e12 / 3600)
    assert main(args + ["--only", "glass/02", "--throughput", "-1"]) == 2  # one error line
    assert "--throughput must be a positive number" in capsys.readouterr().err
