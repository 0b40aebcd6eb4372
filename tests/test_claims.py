"""The cluster-spec grammar, verdicts, and `selfsup-clusters claims` end to end at the smoke budget."""

from __future__ import annotations

import math

import pytest

from selfsup_clusters.claims import combine
from selfsup_clusters.cli import main
from selfsup_clusters.clusters import ClusterError, parse_spec, split_spec_list
from selfsup_clusters.intervals import Interval, verdict
from tests.conftest import needs_fashion_mnist


@pytest.mark.parametrize("text, kind, numbers, name", [
    (" Labels ", "labels", (), "labels"),
    ("wordnet:8", "wordnet", (8,), "wordnet8"),
    ("kmeans:25, 50,100", "kmeans", (25, 50, 100), "kmeans25-50-100"),
    ("merge:2", "merge", (2,), "merge2"),
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


@needs_fashion_mnist
def test_claims_smoke_writes_every_claim_and_resumes_without_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "claims"
    assert main(["claims", "--budget", "smoke", "--seeds", "2", "--out", str(out)]) == 0
    text = (out / "claims.md").read_text()
    for claim in ("C1", "C2", "C3", "C4"):
        assert f"## {claim}:" in text
        assert (out / f"claims_{claim.lower()}.png").stat().st_size > 1000
    assert text.count("**Verdict: ") == 4
    assert "cl-infonce wordnet:8 - simclr" in text and "cl-infonce kmeans:16 - pcl kmeans:16" in text
    assert "cl-infonce wordnet:8 - ce wordnet:8" in text and "Spearman" in text
    assert "merge:2" in text and "split:2" in text  # the synthetic sets join C4
    rows = (out / "claims.csv").read_text().splitlines()
    assert rows[0].startswith("claim,comparison,metric,difference,low,high")
    assert len(rows) == 1 + 2 * 4 + 4  # C1-C3: 4 comparisons x 2 metrics; C4: 2 measures x 2 metrics

    from selfsup_clusters import trainer

    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append(a))
    assert main(["claims", "--budget", "smoke", "--seeds", "2", "--out", str(out)]) == 0
    assert not calls  # every run finished before: nothing is retrained
    assert (out / "claims.md").read_text() == text


def test_claims_rejects_an_unknown_budget(capsys):
    assert main(["claims", "--budget", "huge", "--out", "x"]) == 2
    assert "smoke, cpu, gpu" in capsys.readouterr().err
