"""The evaluation protocol family (issue 36): the probe's penalty chosen per representation on its own training
features, the family's scores, robustness read across it, bad grids and names refused, and finished runs scored
again without training (`rescore`)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.config import read_config
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.evaluation import evaluate
from selfsup_clusters.evaluation.evaluate import choose_penalty, linear_probe, protocol_scores
from selfsup_clusters.evaluation.protocols import FAMILY, robustness, unscored
from tests.conftest import TINY, needs_fashion_mnist

GRID = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
EVAL = SimpleNamespace(probe_l2=GRID, probe_fixed_l2=3e-3, protocols=["linear_fixed", "knn20", "knn200"], knn_t=0.1)


def cancelling(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A representation that needs a weak penalty: 4 classes, each a direction of strength 0.6, drowned in a loud
    shared nuisance (SD 5, + on even classes' directions, - on odd) that a fifth feature measures; only a
    classifier with large weights cancels it."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    nuisance = torch.randn(n, 1, generator=g) * 5
    x = torch.eye(4)[y] * 0.6 + nuisance * torch.tensor([1.0, -1.0, 1.0, -1.0]) + 0.3 * torch.randn(n, 4, generator=g)
    return torch.cat([x, nuisance + 0.05 * torch.randn(n, 1, generator=g)], dim=1), y


def plain(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A representation indifferent to the penalty: 4 class directions of strength 1.9 in 8 noisy features."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    return torch.eye(4, 8)[y] * 1.9 + torch.randn(n, 8, generator=g), y


def test_the_penalty_chosen_per_representation_ranks_two_representations_the_true_way():
    scores = {}
    for name, make in (("cancelling", cancelling), ("plain", plain)):
        (x, y), (x_test, y_test) = make(600, 1), make(2000, 2)
        best = max(linear_probe(x, y, x_test, y_test, l2=l2) for l2 in GRID)  # each at its own best penalty
        scores[name] = {"best": best, **protocol_scores(x, y, x_test, y_test, EVAL)}
    cancelling_, plain_ = scores["cancelling"], scores["plain"]
    # The premise: at their best penalties "cancelling" is the better representation, but one penalty for both
    # (today's 3e-3) ranks "plain" first.
    assert cancelling_["best"] > plain_["best"] + 0.01
    assert cancelling_["linear_fixed_top1"] < plain_["linear_fixed_top1"] - 0.01
    # The deciding probe finds the true order, choosing a weak penalty for the one that needs it.
    assert cancelling_["linear_top1"] > plain_["linear_top1"] + 0.01
    assert cancelling_["linear_l2"] <= 3e-4
    assert set(cancelling_) == {"best", "linear_top1", "linear_l2", "linear_fixed_top1", "knn20_top1", "knn200_top1"}


def test_choose_penalty_reads_only_the_training_features_and_breaks_ties_toward_the_stronger_penalty(monkeypatch):
    x, y = plain(300, 3)
    chosen, held_out = choose_penalty(x, y, [1e-2, 1e-4, 1e-3])
    assert set(held_out) == {1e-4, 1e-3, 1e-2} and chosen in held_out
    assert held_out[chosen] == max(held_out.values())
    fits = []
    real_fit = evaluate.fit_linear
    monkeypatch.setattr(evaluate, "fit_linear",
                        lambda *a, **k: fits.append((a[3], k.get("start"))) or real_fit(*a, **k))
    monkeypatch.setattr(evaluate, "linear_accuracy", lambda model, x, labels: 0.5)  # every penalty ties
    assert choose_penalty(x, y, [1e-4, 1e-2, 1e-3])[0] == 1e-2
    # strongest first, each later fit warm-started from the one before
    assert [l2 for l2, _ in fits] == [1e-2, 1e-3, 1e-4] and fits[0][1] is None and fits[1][1] is not None


def test_robustness_names_the_protocols_that_decide_otherwise():
    assert robustness({"linear": "agrees", "linear_fixed": "agrees", "knn20": "inconclusive"}) == "robust"
    assert robustness({"linear": "inconclusive", "knn20": "inconclusive"}) == "robust"
    assert robustness({"linear": "agrees", "linear_fixed": "agrees", "knn20": "disagrees", "knn200": "equivalent"}) \
        == "protocol-dependent (kNN k=20: disagrees; kNN k=200: equivalent)"
    # undecided on the deciding probe, decided by a fixed penalty: the C2 case of issue 36
    assert robustness({"linear": "inconclusive", "linear_fixed": "agrees"}) \
        == "protocol-dependent (linear (one L2 for all): agrees)"
    assert robustness({"linear": "agrees", "knn20": "disagrees"}, {"disagrees": "lower"}) \
        == "protocol-dependent (kNN k=20: lower)"


def test_unscored_finds_runs_scored_before_the_family():
    family = {protocol.metric: 0.8 for protocol in FAMILY.values()}
    assert unscored({**family, "linear_l2": 0.01}, ["linear_fixed", "knn20", "knn200"]) == []
    assert unscored({"linear_top1": 0.8, "knn_top1": 0.7}, ["knn20"]) == ["linear", "knn20"]
    assert unscored({**family}, []) == ["linear"]  # a linear score without its chosen penalty: the old probe
    assert unscored({"knn_top1": 0.7}, ["knn20"]) == []  # never probed (no labels, eval.linear=false)


@pytest.mark.parametrize(("override", "message"), [
    ("eval.probe_l2=[0.01]", "at least two distinct values above 0"),
    ("eval.probe_l2=[0.01,0.0]", "at least two distinct values above 0"),
    ("eval.probe_l2=[0.01,0.01]", "at least two distinct values above 0"),
    ("eval.protocols=[knn5]", "'knn5': the protocols a verdict is checked against are linear_fixed, knn20, knn200"),
    ("eval.protocols=[linear]", "'linear' always decides"),
    ("eval.probe_fixed_l2=0", "eval.probe_fixed_l2=0"),
])
def test_a_bad_grid_or_protocol_is_one_clear_error(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_config(None, [override])


@needs_fashion_mnist
def test_rescore_scores_finished_runs_again_without_training_and_rewrites_the_tables(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "simclr,moco", "--out", str(out), *TINY, "epochs=1", "eval.projector=0",
            "eval.cluster_metrics=false", "eval.protocols=[knn20]"]
    assert main(args) == 0
    final_path = out / "moco" / "seed0" / "final.json"
    trained = json.loads(final_path.read_text())
    assert trained["linear_l2"] in GRID and "knn20_top1" in trained and "linear_fixed_top1" not in trained
    # A run scored before the family: its linear score from the old fixed probe, no chosen penalty.
    old = {key: value for key, value in trained.items() if key not in ("linear_l2", "knn20_top1")}
    final_path.write_text(json.dumps({**old, "linear_top1": 0.5}))
    raw_path = out / "raw_pixels.json"  # raw pixels' row from before the family: scored again too
    raw = json.loads(raw_path.read_text())[0]
    raw_path.write_text(json.dumps([{k: v for k, v in raw.items() if k not in ("linear_l2", "knn20_top1")}]))
    from selfsup_clusters.training import trainer

    monkeypatch.setattr(trainer, "train", lambda cfg: pytest.fail("trained"))
    monkeypatch.chdir(tmp_path)
    assert main(["rescore", str(out)]) == 0
    rescored = json.loads(final_path.read_text())
    assert rescored["rescored"]["before"] == {"linear_top1": 0.5}
    # the same checkpoint, features and probe as at the end of training: the same numbers
    assert {key: rescored[key] for key in ("linear_top1", "linear_l2", "knn20_top1")} == \
        {key: trained[key] for key in ("linear_top1", "linear_l2", "knn20_top1")}
    rows = {row["name"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert float(rows["moco"]["linear_top1"]) == pytest.approx(trained["linear_top1"])
    assert float(rows["raw pixels"]["linear_l2"]) == raw["linear_l2"] and rows["raw pixels"]["knn20_top1"]
    assert "rewriting the tables: selfsup-clusters compare" in capsys.readouterr().out
    from selfsup_clusters.training.run_eval import rescore_run

    with pytest.raises(UserError, match="is not a finished run"):
        rescore_run(tmp_path / "nothing")
    assert main(["rescore", str(tmp_path / "nothing")]) == 2
    assert "holds no finished run" in capsys.readouterr().err


@needs_fashion_mnist
def test_a_diverged_point_shows_as_diverged_and_is_never_the_best(tmp_path, capsys, monkeypatch):
    out = tmp_path / "tune"
    args = ["tune", "--method", "simclr", "--grid", "optim.lr=0.3,1e30", "--out", str(out), *TINY, "epochs=1",
            "eval.projector=0", "eval.cluster_metrics=false", "data.subset=300"]
    assert main(args) == 1  # a run that diverged is a failure of the command
    table = (out / "tune.md").read_text()
    assert "| 1e30 | diverged | - | 0 (diverged: seed 0) |" in table.replace("1e+30", "1e30")
    assert "FAILED: simclr optim.lr=1e30 seed 0 DIVERGED: simclr diverged in epoch 1" in table
    assert "best: optim.lr=0.3" in table
    # Run again: the diverged run is shown from its diverged.json, not trained a second time.
    from selfsup_clusters.training import trainer

    monkeypatch.setattr(trainer, "train", lambda cfg: pytest.fail("trained again"))
    monkeypatch.setattr(trainer, "resume", lambda run_dir: pytest.fail("resumed"))
    capsys.readouterr()
    assert main(args) == 1
    assert "diverged before, in epoch 1" in capsys.readouterr().out
    assert (out / "tune.md").read_text().split("FAILED")[0] == table.split("FAILED")[0]
