"""Invariants of the loop that a finishing run does not show: the memory bank holds each step's embeddings at the
samples' own slots, evaluation leaves the model as it found it, and the learning-rate schedule and parameter groups
are what build_optimizer documents. Tiny models on synthetic images: no data needed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup_clusters.recipes import load_config
from selfsup_clusters.studies.bench import synthetic_dataset
from selfsup_clusters.training.logger import NullLogger
from selfsup_clusters.training.run import build_optimizer, setup
from selfsup_clusters.training.run_eval import backbone_features, evaluate
from selfsup_clusters.training.trainer import clustering_due, train_epoch, update_clusters
from tests.conftest import TINY, every_method

SMALL = ["precision=fp32", "batch_size=32", "data.image_size=16", "eval.batch_size=64", "eval.projector=0",
         "eval.linear=false", "eval.cluster_metrics=false", "clusters.niter=5", "clusters.nredo=1"]
# Every registered method (conftest.every_method), sized small where named here.
EVERY_METHOD = every_method({
    "cl-infonce": ["clusters.spec=kmeans:4", "method_args.key_queue=48"],
    "moco": ["method_args.queue_size=64", "method_args.shuffle_bn_splits=2"],
    "pcl": ["clusters.spec=kmeans:4", "clusters.warmup=0", "method_args.queue_size=64",
            "method_args.shuffle_bn_splits=2"],
    "swav": ["method_args.num_prototypes=8", "method_args.queue_length=32", "method_args.queue_start_epoch=0"],
}, spec="kmeans:4")
SETTINGS = {param.values[0]: param.values[1] for param in EVERY_METHOD}


def small_run(tmp_path, method: str = "simclr", *overrides: str, train: int = 64):
    cfg = load_config(overrides=[*TINY, *SMALL, *SETTINGS[method], *overrides,
                                 f"out={tmp_path / 'run'}"])
    run = setup(cfg, data=synthetic_dataset(train, 48, channels=1, size=16))
    if clustering_due(run, 0):
        update_clusters(run, 0, NullLogger())
    return run


# --- the memory bank ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, _settings", EVERY_METHOD)
def test_memory_bank_holds_each_steps_embeddings_at_the_samples_own_slots(tmp_path, method, _settings):
    run = small_run(tmp_path, method)
    steps, checks = [], []
    model, after_step = run.model, run.method.after_step

    def recording_model(views, index, labels):
        out = model(views, index, labels)
        steps.append((index.clone(), labels.clone(), out["z"].detach().clone()))
        return out

    def checking_after_step():  # the trainer updates the bank right before this hook
        index, labels, z = steps[-1]
        checks.append(torch.equal(run.memory.features[index], z.float()))
        checks.append(torch.equal(labels, run.data.train.labels[index]))  # label and index belong together
        after_step()

    run.model, run.method.after_step = recording_model, checking_after_step
    train_epoch(run, 0, NullLogger())
    assert len(steps) == 2 and checks and all(checks)
    seen = torch.cat([index for index, _, _ in steps])
    assert sorted(seen.tolist()) == list(range(64)) and seen.tolist() != list(range(64))  # shuffled, all once
    assert bool(run.memory.seen.all())
    last_index, _, last_z = steps[-1]
    assert torch.allclose(last_z.norm(dim=1), torch.ones(len(last_index)), atol=1e-4)


def captured_kmeans_input(run, epoch: int) -> torch.Tensor:
    captured = []
    assign = run.cluster_source.assign

    def spy(features):
        captured.append(features.clone())
        return assign(features)

    run.cluster_source.assign = spy
    try:
        update_clusters(run, epoch, NullLogger())
    finally:
        run.cluster_source.assign = assign
    return captured[0]


def test_kmeans_clusters_the_bank_once_it_is_full_and_a_fresh_pass_otherwise(tmp_path):
    from selfsup_clusters.evaluation.evaluate import extract_features

    run = small_run(tmp_path, "cl-infonce")  # features=memory; epoch 0 clustered a fresh pass (empty bank)
    train_epoch(run, 0, NullLogger())
    assert bool(run.memory.seen.all())
    fresh = extract_features(run.method.embed, run.batches.eval(run.data.train, 64), modules=[run.method])
    bank = run.memory.features.clone()
    assert not torch.allclose(fresh, bank, atol=1e-3)  # training-mode, augmented embeddings of older weights

    run.cfg.clusters.features = "memory"
    torch.testing.assert_close(captured_kmeans_input(run, 1), bank, atol=0, rtol=0)
    run.cfg.clusters.features = "forward"
    torch.testing.assert_close(captured_kmeans_input(run, 1), fresh)
    run.method.train()
    assert run.method.training  # the fresh pass restored training mode


def test_kmeans_before_the_bank_is_full_uses_a_fresh_pass(tmp_path):
    from selfsup_clusters.evaluation.evaluate import extract_features

    run = small_run(tmp_path, "cl-infonce")
    run.memory.seen[:10] = True  # only some samples seen: the bank still holds random vectors
    fresh = extract_features(run.method.embed, run.batches.eval(run.data.train, 64), modules=[run.method])
    torch.testing.assert_close(captured_kmeans_input(run, 0), fresh)


# --- evaluation leaves the model as it found it ------------------------------------------------------------------


def perturb_batchnorm(module: nn.Module) -> None:
    """Running statistics away from their initial 0 and 1, as after training."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def snapshot(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(before: dict, module: nn.Module) -> None:
    after = module.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, f"evaluation changed {changed[:5]}"


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_evaluation_keeps_batchnorm_statistics_and_training_mode(tmp_path, method):
    run = small_run(tmp_path, method)
    perturb_batchnorm(run.method)
    run.method.train()
    before = snapshot(run.method)
    backbone_features(run, run.data.test)
    evaluate(run, final=True, logger=NullLogger())
    assert_same_state(before, run.method)
    assert all(m.training for m in run.method.modules())

    run.method.eval()
    backbone_features(run, run.data.train)
    assert not any(m.training for m in run.method.modules())  # eval mode stays eval mode


def test_augmented_linear_probe_keeps_the_model_as_it_was(tmp_path):
    run = small_run(tmp_path, "simclr", "eval.linear=true", "eval.cluster_metrics=false",
                    "eval.linear_augmented_epochs=1")
    perturb_batchnorm(run.method)
    run.method.train()
    before = snapshot(run.method)
    results = evaluate(run, final=True, logger=NullLogger())
    assert "linear_top1" in results
    assert_same_state(before, run.method)
    assert all(m.training for m in run.method.modules())


def test_fresh_pass_for_kmeans_keeps_batchnorm_statistics(tmp_path):
    run = small_run(tmp_path, "ce")
    perturb_batchnorm(run.method)
    run.method.train()
    before = snapshot(run.method)
    run.cfg.clusters.features = "forward"
    captured_kmeans_input(run, 1)
    # Re-clustering re-initialises the heads (new ids) and counts the reset; nothing else may change.
    before = {k: v for k, v in before.items() if not k.startswith("heads.") and k != "resets"}
    assert_same_state(before, run.method)
    assert all(m.training for m in run.method.modules())


# --- learning-rate schedule and parameter groups -----------------------------------------------------------------


def tiny_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
                          nn.LayerNorm(3))
    model.append(nn.Linear(3, 2, bias=False))
    model[-1].weight.requires_grad_(False)  # frozen: in no group
    return model


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_learning_rate_warms_up_linearly_then_follows_the_cosine_to_its_floor(name):
    cfg = load_config(overrides=[*TINY, f"optim.name={name}", "optim.lr=0.4", "batch_size=64", "epochs=5",
                                 "optim.warmup_epochs=2", "optim.min_lr_ratio=0.1", "optim.weight_decay=0.001"])
    model = tiny_model()
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch=10)
    base = 0.4 * 64 / 256  # lr per 256, scaled by the batch size
    lrs = []
    for _ in range(50):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, group_lrs in enumerate(lrs):
        if step < 20:
            expected = base * (step + 1) / 20
        else:
            expected = base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 20) / 30)))
        assert group_lrs == pytest.approx([expected, expected], rel=1e-9), step
    assert lrs[19][0] == pytest.approx(base) and lrs[20][0] == pytest.approx(base)  # the peak, once warm
    assert lrs[-1][0] == pytest.approx(base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 29 / 30))))
    assert min(lr for lr, _ in lrs[20:]) >= 0.1 * base - 1e-12  # the cosine ends at min_lr_ratio, not 0


def test_no_weight_decay_on_norm_weights_and_biases():
    cfg = load_config(overrides=[*TINY, "optim.weight_decay=0.001"])
    model = tiny_model()
    optimizer, _ = build_optimizer(cfg, model, steps_per_epoch=10)
    decay, no_decay = optimizer.param_groups
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in decay["params"]} == {id(p) for p in trainable if p.ndim > 1}
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in trainable if p.ndim <= 1}
    assert decay["weight_decay"] == 0.001 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 6  # conv bias, BatchNorm weight and bias, linear bias, LayerNorm weight+bias
    assert id(model[-1].weight) not in {id(p) for p in [*decay["params"], *no_decay["params"]]}


def test_warmup_shorter_than_a_step_and_no_warmup():
    cfg = load_config(overrides=[*TINY, "optim.lr=0.256", "batch_size=256", "epochs=2", "optim.warmup_epochs=0",
                                 "optim.min_lr_ratio=0"])
    optimizer, scheduler = build_optimizer(cfg, tiny_model(), steps_per_epoch=4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.256)  # no warm-up: the full lr from step 0
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.256 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_optimizer_kernels_compute_the_same_update(name):
    """optim.kernel only changes how the update is computed: foreach is bitwise the per-tensor loop, fused (the
    CPU's auto) agrees with it to a few ulp."""
    cfg = load_config(overrides=[*TINY, f"optim.name={name}", "optim.nesterov=true", "optim.weight_decay=0.01"])
    finals = []
    for kernel in ("foreach", "loop", "fused", "auto"):
        cfg.optim.kernel = kernel
        torch.manual_seed(0)
        model = tiny_model()
        optimizer, _ = build_optimizer(cfg, model, steps_per_epoch=10)
        group = optimizer.param_groups[0]
        assert (group["foreach"], bool(group["fused"])) == {"foreach": (True, False), "loop": (False, False),
                                                           "fused": (None, True), "auto": (None, True)}[kernel]
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=generator)
            optimizer.step()
        finals.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(finals[0], finals[1], strict=True))
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(finals[0], finals[2], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(finals[2], finals[3], strict=True))
