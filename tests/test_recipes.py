"""Fair comparisons: each method's recipe, the validation split, `tune`, and the recipe-related method fixes
(symmetric MoCo, loss scaling, PCL's K warning, CE's optimizer state after a head reset)."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.data.base import ImageDataset
from selfsup_clusters.methods.losses import info_nce
from selfsup_clusters.methods.registry import METHODS, build_method
from selfsup_clusters.recipes import load_config
from selfsup_clusters.studies.bench import synthetic_dataset
from selfsup_clusters.training import run as run_module
from selfsup_clusters.training import trainer
from selfsup_clusters.training.logger import NullLogger
from tests.conftest import TINY, needs_fashion_mnist

# --- recipes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_loads_its_own_recipe(name):
    cfg = load_config(overrides=[f"method={name}"])
    for key, value in METHODS[name].recipe.items():
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == value, key


def test_user_settings_win_over_the_recipe():
    assert METHODS["moco"].recipe["optim.lr"] == 0.03
    assert load_config(overrides=["method=moco", "optim.lr=0.2"]).optim.lr == 0.2
    # the method named last decides which recipe lies beneath
    assert load_config(overrides=["method=simclr", "method=moco"]).optim.lr == 0.03


@needs_fashion_mnist
def test_the_recipe_reaches_final_json(tmp_path):
    final = trainer.train(load_config(overrides=[*TINY, "epochs=1", "method=moco", "method_args.queue_size=64",
                                                 f"out={tmp_path}"]))
    saved = json.loads((tmp_path / "final.json").read_text())["config"]
    assert final["config"]["optim"]["lr"] == saved["optim"]["lr"] == 0.03
    assert saved["optim"]["weight_decay"] == 1e-4 and saved["method_args"]["temperature"] == 0.2


def test_methods_command_lists_every_recipe_and_reference(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, kind in METHODS.items():
        assert f"{name}" in out and kind.reference in out
    assert "lr/256 0.03" in out  # MoCo's


def test_temperature_must_be_positive(capsys):
    assert main(["train", "method_args.temperature=0"]) == 2
    assert "method_args.temperature must be > 0" in capsys.readouterr().err


# --- validation split ------------------------------------------------------------------------------------------


def test_validation_split_is_disjoint_stratified_and_seeded():
    data = synthetic_dataset(1000, 50, channels=1, size=8)
    data.train.labels = torch.arange(1000) % 4  # 250 per class
    data.train.images[:, 0, 0, 0], data.train.images[:, 0, 0, 1] = torch.arange(1000) % 256, torch.arange(1000) // 256

    def sample_ids(split) -> set[int]:
        return set((split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()).tolist())

    held = data.holdout(0.1)
    assert len(held.train) == 900 and len(held.test) == 100
    assert torch.bincount(held.test.labels).tolist() == [25] * 4  # stratified
    assert not sample_ids(held.train) & sample_ids(held.test)  # disjoint
    assert sample_ids(held.train) | sample_ids(held.test) == set(range(1000))
    assert sample_ids(data.holdout(0.1).test) == sample_ids(held.test)  # seeded
    assert sample_ids(data.holdout(0.1, seed=1).test) != sample_ids(held.test)


def test_validation_fraction_is_checked(capsys):
    assert main(["train", "data.val_fraction=1.5"]) == 2
    assert "data.val_fraction" in capsys.readouterr().err


# --- tune --------------------------------------------------------------------------------------------------------


class Untouchable:
    """A test split that fails the test on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read ({name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")


@needs_fashion_mnist
def test_tune_writes_its_files_and_never_reads_the_test_split(tmp_path, monkeypatch, capsys):
    from selfsup_clusters.data import DATASETS

    real_load = DATASETS["fashion-mnist"]

    def load_without_test(cfg, path) -> ImageDataset:
        data = real_load(cfg, path)
        data.test = Untouchable()
        return data

    monkeypatch.setitem(DATASETS, "fashion-mnist", load_without_test)
    out = tmp_path / "tune"
    args = ["tune", "--method", "simclr", "--grid", "optim.lr=0.1,0.4", "--out", str(out), *TINY, "epochs=1",
            "eval.cluster_metrics=false", "eval.projector=0"]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "tune.csv").open()))
    assert sorted(r["optim.lr"] for r in rows) == ["0.1", "0.4"]
    assert float(rows[0]["linear_top1"]) >= float(rows[1]["linear_top1"])  # best first
    assert "VALIDATION" in (out / "tune.md").read_text()
    best = load_config(out / "best.yaml")
    assert best.optim.lr == float(rows[0]["optim.lr"]) and best.data.val_fraction == 0  # final training: all data
    final = json.loads(next(out.glob("simclr_optim.lr=0.1/seed0/final.json")).read_text())
    assert final["config"]["data"]["val_fraction"] == 0.1
    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append(a))
    assert main(args) == 0 and not calls  # finished points are skipped


def test_tune_rejects_a_bad_grid(capsys):
    assert main(["tune", "--method", "simclr", "--grid", "optim.lr", "--out", "x"]) == 2
    assert "key=v1,v2" in capsys.readouterr().err
    assert main(["tune", "--method", "simclr", "--grid", "optim.nope=1,2", "--out", "x"]) == 2
    assert "optim.nope" in capsys.readouterr().err


# --- method fixes ----------------------------------------------------------------------------------------------


def tiny(name: str, *overrides: str):
    cfg = load_config(overrides=[*TINY, f"method={name}", "batch_size=16", "method_args.queue_size=40", *overrides])
    torch.manual_seed(0)
    method = build_method(cfg, in_chans=1, num_clusters=[10] if METHODS[name].needs_cluster_spec else None)
    return method.train()


def batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(16, 1, 28, 28, generator=generator) for _ in range(2)]
    index = torch.arange(16) + 100
    return views, index, torch.arange(16) % 3


def test_symmetric_moco_averages_both_directions():
    moco = tiny("moco", "method_args.symmetric=true", "method_args.shuffle_bn_splits=1")
    views, index, label = batch()
    queue = moco.queue.clone()
    q0, q1 = moco.encode_queries(views[0]), moco.encode_queries(views[1])
    k0, k1 = moco.encode_keys(views[0]), moco.encode_keys(views[1])
    expected = (info_nce(q0, k1, queue, 0.2) + info_nce(q1, k0, queue, 0.2)) / 2
    loss = moco.training_step(views, index, label)["loss"]
    assert torch.allclose(loss, expected, atol=1e-5)
    assert not torch.allclose(loss, info_nce(q0, k1, queue, 0.2), atol=1e-3)
    assert torch.allclose(moco.queue[:16], k1, atol=1e-6)  # only view 1's keys are enqueued


@pytest.mark.parametrize("name", ["simclr", "cl-infonce", "moco"])
def test_base_temperature_scales_the_loss_by_t_over_base_t(name):
    from selfsup_clusters.clusters import Assignments

    views, index, label = batch()
    losses = []
    for base in ("null", "0.07"):
        method = tiny(name, f"method_args.base_temperature={base}")
        if name == "cl-infonce":
            method.set_clusters(Assignments(ids=[torch.arange(200) % 5]))
        torch.manual_seed(3)
        losses.append(method.training_step(views, index, label)["loss"])
    assert torch.allclose(losses[1], losses[0] * method.temperature / 0.07, rtol=1e-5)


def test_pcl_warns_when_k_is_not_far_above_the_batch(caplog):
    cfg = load_config(overrides=[*TINY, "method=pcl", "batch_size=16"])
    with caplog.at_level(logging.WARNING, logger="selfsup_clusters.methods.baselines.pcl"):
        build_method(cfg, 1, num_clusters=[32, 200])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "K=32 " in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selfsup_clusters.methods.baselines.pcl"):
        build_method(cfg, 1, num_clusters=[200])
    assert not caplog.records


def test_ce_head_reset_clears_its_optimizer_state(tmp_path):
    cfg = load_config(overrides=[*TINY, "method=ce", "clusters.spec=kmeans:5", "batch_size=32", f"out={tmp_path}",
                                 "device=cpu"])
    run = run_module.setup(cfg, data=synthetic_dataset(64, 10, channels=1, size=16))
    trainer.update_clusters(run, 0, NullLogger())
    trainer.train_epoch(run, 0, NullLogger())
    heads = set(run.method.heads.parameters())
    assert heads <= set(run.optimizer.state)  # momentum buffers exist after a step
    before = [p.detach().clone() for p in run.method.heads.parameters()]
    trainer.update_clusters(run, 1, NullLogger())  # k-means again: fresh heads
    # a fresh start: no momentum (SGD's zero buffer is what a missing one gives, and what the fused step needs)
    assert all(not run.optimizer.state[p] or not run.optimizer.state[p]["momentum_buffer"].any() for p in heads)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.method.heads.parameters(), strict=True))
    backbone = next(run.method.backbone.parameters())
    assert backbone in run.optimizer.state  # the backbone keeps its momentum
