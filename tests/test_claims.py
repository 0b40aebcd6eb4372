"""The cluster-spec grammar, verdicts, and `selfsup-clusters claims` end to end at the smoke budget."""

from __future__ import annotations

import csv
import math

import pytest

from selfsup_clusters.cli import main
from selfsup_clusters.clusters import ClusterError, parse_spec, split_spec_list
from selfsup_clusters.evaluation.intervals import Interval, verdict
from selfsup_clusters.evaluation.protocols import FAMILY
from selfsup_clusters.studies.claims_report import combine
from tests.conftest import needs_fashion_mnist


@pytest.mark.parametrize("text, kind, numbers, name", [
    (" Labels ", "labels", (), "labels"),
    ("wordnet:8", "wordnet", (8,), "wordnet8"),
    ("kmeans:25, 50,100", "kmeans", (25, 50, 100), "kmeans25-50-100"),
    ("merge:2", "merge", (2,), "merge2"),
    ("instance", "instance", (), "instance"),
])
def test_spec_grammar_parses_and_names(text, kind, numbers, name):
    spec = parse_spec(text)
    (part,) = spec.parts
    assert (part.kind, part.numbers, spec.name) == (kind, numbers, name)
    assert parse_spec(str(spec)) == spec
    assert spec.dynamic == (kind == "kmeans") and spec.fixed == (kind != "kmeans")


def test_none_spec_has_no_parts():
    spec = parse_spec("none")
    assert spec.parts == () and str(spec) == "none" and not spec.dynamic and not spec.fixed


def test_spec_clustering_names_and_lists():
    assert parse_spec("kmeans:25,50").clustering_names() == ["kmeans25", "kmeans50"]
    assert parse_spec("wordnet:7").clustering_names() == ["wordnet7"]
    assert split_spec_list("wordnet:7,kmeans:25,50,merge:2") == ["wordnet:7", "kmeans:25,50", "merge:2"]
    assert split_spec_list("cl-infonce=kmeans:5,6,pcl=kmeans:7") == ["cl-infonce=kmeans:5,6", "pcl=kmeans:7"]
    assert split_spec_list(None) == []
    with pytest.raises(ClusterError, match="use one of"):
        parse_spec("wordnet:7,8")


def test_verdicts_combine_over_a_claims_comparisons():
    agrees, disagrees, unsure = Interval(0.02, 0.01, 0.03, 3), Interval(-0.02, -0.03, -0.01, 3), \
        Interval(0.0, -0.01, 0.01, 3)
    assert [verdict(i, +1) for i in (agrees, disagrees, unsure)] == ["agrees", "disagrees", "inconclusive"]
    assert verdict(Interval(0.1, math.nan, math.nan, 5), -1) == "inconclusive"  # an undefined bound decides nothing
    assert combine(["agrees", "agrees"]) == "agrees"
    assert combine(["agrees", "inconclusive"]) == "inconclusive"
    assert combine(["agrees", "disagrees"]) == "disagrees"
    assert combine(["agrees", "not measured"]) == "not measured"


def test_an_instance_part_keeps_each_samples_own_views_as_its_only_positives():
    import torch

    from selfsup_clusters.clusters import build_cluster_source
    from selfsup_clusters.data.base import AuxiliaryInfo

    aux = AuxiliaryInfo(labels=torch.tensor([0, 0, 1, 1, 1]), class_names=["a", "b"])
    source = build_cluster_source("kmeans:2@0.5+instance@0.5", aux)
    ids = source.assign(None).ids  # before the first clustering the k-means part is instances too
    assert [i.tolist() for i in ids] == [[0, 1, 2, 3, 4]] * 2
    assert source.spec.clustering_weights() == [0.5, 0.5]


@needs_fashion_mnist
def test_claims_smoke_writes_every_claim_and_resumes_without_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "claims"
    assert main(["claims", "--budget", "smoke", "--seeds", "2", "--out", str(out)]) == 0
    text = (out / "claims.md").read_text()
    for claim in ("C1", "C2", "C3", "C4", "K", "F"):
        assert f"## {claim}:" in text
        assert (out / f"claims_{claim.lower()}.png").stat().st_size > 1000
    assert text.count("**Verdict: ") == 6
    # the clustering family at one K, SwAV's prototypes and DeepCluster-v2's clusters in the diagnostics
    assert "DeepCluster-v2: cl-infonce kmeans:16 - deepcluster-v2 kmeans:16 clusters.warmup=0" in text
    assert "SwAV: cl-infonce kmeans:16 - swav method_args.num_prototypes=16" in text
    assert "| prototypes:16 |" in text and "| kmeans16 |" in text
    assert "the recipe: cl-infonce instance - simclr" in text
    assert "the clusters with mates (K=4): cl-infonce kmeans:4 - cl-infonce instance" in text
    assert "cluster-mates per anchor" in text
    assert "cl-infonce wordnet:8 - simclr" in text and "cl-infonce kmeans:16 - pcl kmeans:16" in text
    assert "cl-infonce wordnet:8 - ce wordnet:8" in text and "Spearman" in text
    assert "merge:2" in text and "split:4" in text  # the synthetic sets join C4
    assert "H(Z|T) given I(Z;T)" in text and "**The shortcut, checked once**" in text
    rows = (out / "claims.csv").read_text().splitlines()
    assert rows[0] == "claim,comparison,metric,difference,low,high,n,verdict,robustness"
    # C1-C3, K, F: 12 comparisons, C4: 4 correlations, each under the 4 protocols of the family
    assert len(rows) == 1 + 12 * 4 + 4 * 4
    table = list(csv.DictReader((out / "claims.csv").open()))
    assert {r["metric"] for r in table} == {p.label for p in FAMILY.values()}
    assert all(r["robustness"] == "robust" or r["robustness"].startswith("protocol-dependent (") for r in table)
    verdicts = [line for line in text.splitlines() if line.startswith("**Verdict: ")]
    assert all(", robust**" in line or ", protocol-dependent (" in line for line in verdicts), verdicts
    assert "probe with its L2 penalty chosen per representation" in text
    # The curve: every comparison at both budgets (epochs 1 and 2 of 4 steps of 64 samples), raw pixels beside.
    curve = list(csv.DictReader((out / "curve.csv").open()))
    simclr = [r for r in curve if r["comparison"] == "cl-infonce wordnet:8 - simclr" and r["metric"] == "linear_top1"]
    assert [int(r["samples_seen"]) for r in simclr] == [256, 512] and all(r["n"] == "2" for r in simclr)
    assert all(r["robustness"] for r in simclr)  # the deciding protocol's points say how they hold
    assert {r["claim"] for r in curve} == {"C1", "C2", "C3", "C4", "K", "F", "raw pixels"}
    assert (out / "claims_curve.png").stat().st_size > 1000
    runs = list(csv.DictReader((out / "claims_runs.csv").open()))
    assert list(runs[0]) == ["run", "linear_top1", "linear_low", "linear_high", "knn_top1", "knn_low", "knn_high"]
    assert runs[-1]["run"] == "raw pixels" and runs[-1]["linear_low"] == ""
    # C4's sets no other claim trains ran on level_seeds: 1 seed; the shortcut on the first seed only.
    assert sorted(p.name for p in (out / "cl-infonce_split4").iterdir()) == ["seed0"]
    assert sorted(p.name for p in (out / "simclr").iterdir()) == ["seed0", "seed1"]

    from selfsup_clusters.training import trainer

    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append(a))
    assert main(["claims", "--budget", "smoke", "--seeds", "2", "--out", str(out)]) == 0
    assert not calls  # every run finished before: nothing is retrained
    assert (out / "claims.md").read_text() == text


@needs_fashion_mnist
def test_claims_refuses_an_auxiliary_spec_the_dataset_lacks_before_training(tmp_path, capsys, monkeypatch):
    from selfsup_clusters.training import trainer
    from tests.test_datasets import fake_table

    fake_table(tmp_path)  # classes without WordNet ids, with attribute columns
    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append(a))
    status = main(["claims", "--budget", "smoke", "--out", str(tmp_path / "c"), "--dataset",
                   f"csv:{tmp_path / 'table.csv'}", "data.subset=null", "data.test_subset=null", "claims.kmeans=4"])
    err = capsys.readouterr().err
    assert status == 2 and not calls
    assert "claims.auxiliary=wordnet:8 does not apply to csv:" in err and "set claims.auxiliary=" in err
    assert "attributes:2" in err and "labels" in err  # the specs this dataset offers
    assert len(err.strip().splitlines()) == 1


def test_claims_rejects_an_unknown_budget(capsys):
    assert main(["claims", "--budget", "huge", "--out", "x"]) == 2
    assert "smoke, cpu, gpu" in capsys.readouterr().err


def test_c4_sets_with_their_own_budget_train_apart_from_c1s_run():
    from selfsup_clusters.studies.claims_plan import Comparison, Plan
    from selfsup_clusters.studies.suite import Entry

    aux = Entry("cl-infonce", "wordnet:8")
    levels = [("labels", {}), ("wordnet:8", {})]
    shared = Plan([Comparison("C1", aux, Entry("simclr"))], levels, None)
    assert shared.level_entries() == [Entry("cl-infonce", "labels")]  # wordnet:8 is C1's run
    own = Plan([Comparison("C1", aux, Entry("simclr"))], levels, None, ("epochs=3",))
    assert own.level_entries() == [Entry("cl-infonce", "labels", ("epochs=3",)),
                                   Entry("cl-infonce", "wordnet:8", ("epochs=3",))]
