"""Composite cluster specs ("wordnet:7@0.5+kmeans:500"), tags and categorical attributes as binary indicators."""

import json

import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.clusters import (
    Assignments,
    ClusterError,
    attribute_clusters,
    build_cluster_source,
    parse_spec,
    split_spec_list,
)
from selfsup_clusters.data.base import AuxiliaryInfo
from selfsup_clusters.data.csv_table import categorical_indicators, tag_indicators
from selfsup_clusters.methods.losses import weighted_mean
from selfsup_clusters.methods.registry import build_method
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import train
from tests.conftest import TINY, metrics, needs_fashion_mnist, needs_wordnet


def test_composite_specs_parse_name_and_weigh_their_parts():
    spec = parse_spec(" WordNet:7@0.5 + kmeans:25,50 ")
    assert str(spec) == "wordnet:7@0.5+kmeans:25,50" and parse_spec(str(spec)) == spec
    assert spec.name == "wordnet7@0.5+kmeans25-50"
    assert spec.clustering_names() == ["wordnet7", "kmeans25", "kmeans50"]
    assert spec.clustering_weights() == [0.5, 0.5, 0.5]  # a k-means part's weight is shared among its K
    assert spec.clustering_dynamic() == [False, True, True] and spec.dynamic and spec.fixed
    assert parse_spec("wordnet:7@1+wordnet:9") == parse_spec("wordnet:7+wordnet:9")  # weight 1 is the default
    assert split_spec_list("cl-infonce=kmeans:25,50+wordnet:7,ce=wordnet:8@2+kmeans:9") == [
        "cl-infonce=kmeans:25,50+wordnet:7", "ce=wordnet:8@2+kmeans:9"]


@pytest.mark.parametrize("text, message", [
    ("wordnet:7@0", "weight after '@' must be a positive number"),
    ("wordnet:7@-1+labels", "weight after '@' must be a positive number"),
    ("wordnet:7@x", "weight after '@' must be a positive number"),
    ("wordnet:7@nan", "weight after '@' must be a positive number"),
    ("wordnet:7+colour:3", "unknown clusters spec 'colour:3'"),
    ("wordnet:7+", "empty part"),
    ("none+labels", "'none' cannot be combined"),
    ("wordnet:7+wordnet:7@2", "gives wordnet7 twice"),
    ("kmeans:5,6+kmeans:6", "gives kmeans6 twice"),
])
def test_bad_composite_specs_say_what_is_wrong(text, message):
    with pytest.raises(ClusterError, match=message):
        parse_spec(text)


def test_composite_source_puts_its_parts_side_by_side():
    labels = torch.arange(40) % 4
    aux = AuxiliaryInfo(labels, ["a", "b", "c", "d"])
    source = build_cluster_source("labels+merge:2@3+kmeans:3", aux)
    assert source.num_clusters == [4, 2, 3]
    before = source.assign(None)  # before the k-means warm-up: each sample its own cluster
    assert torch.equal(before.ids[0], labels) and torch.equal(before.ids[2], torch.arange(40))
    features = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    after = source.assign(features)
    assert torch.equal(after.ids[1], before.ids[1]) and int(after.ids[2].max()) < 3
    assert after.centroids is None and after.names[0] == ["a", "b", "c", "d"]


def composite_and_single_methods(name, spec, num_clusters):
    """The method on the composite spec and on each single part, with the same weights."""
    parts = [str(part).split("@")[0] for part in parse_spec(spec).parts]
    methods = []
    for text, clusters in [(spec, num_clusters), *zip(parts, [[k] for k in num_clusters], strict=True)]:
        cfg = load_config(overrides=[*TINY, f"method={name}", f"clusters.spec={text}"])
        torch.manual_seed(0)
        methods.append(build_method(cfg, 1, num_clusters=clusters).train())
    shared = {k: v for k, v in methods[0].state_dict().items() if not k.startswith("heads.")}  # ce: matched below
    for single in methods[1:]:
        single.load_state_dict(shared, strict=False)
    return methods


@pytest.mark.parametrize("method", ["cl-infonce", "ce"])
def test_composite_loss_is_the_weighted_mean_of_the_single_source_losses(method):
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 1, 28, 28, generator=g) for _ in range(2)]
    index = torch.randperm(32, generator=g)[:8]
    ids = [torch.randint(0, 4, (32,), generator=g), torch.randint(0, 3, (32,), generator=g)]
    composite, first, second = composite_and_single_methods(method, "labels@0.25+superclass", [4, 3])
    composite.set_clusters(Assignments(ids=ids))
    for single, clustering in zip((first, second), ids, strict=True):
        single.set_clusters(Assignments(ids=[clustering]))
    if method == "ce":
        first.heads[0].load_state_dict(composite.heads[0].state_dict())
        second.heads[0].load_state_dict(composite.heads[1].state_dict())
    with torch.random.fork_rng():
        losses = [m.training_step(views, index, index)["loss"] for m in (composite, first, second)]
    expected = (0.25 * losses[1] + 1.0 * losses[2]) / 1.25
    assert losses[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses[0].item() != pytest.approx(((losses[1] + losses[2]) / 2).item(), rel=1e-3)  # weights matter


def test_weighted_mean_needs_a_weight_per_loss():
    assert weighted_mean([torch.tensor(1.0), torch.tensor(4.0)], [3, 1]).item() == pytest.approx(1.75)
    with pytest.raises(ValueError, match="one weight per loss"):
        weighted_mean([torch.tensor(1.0)], [1, 2])


def test_pcl_takes_kmeans_parts_only():
    cfg = load_config(overrides=[*TINY, "method=pcl", "clusters.spec=kmeans:300+wordnet:7"])
    with pytest.raises(Exception, match="k-means centroids only, and 'wordnet:7' is not k-means"):
        build_method(cfg, 1, num_clusters=[300, 3])
    ok = load_config(overrides=[*TINY, "method=pcl", "clusters.spec=kmeans:300+kmeans:400@0.5"])
    assert build_method(ok, 1, num_clusters=[300, 400]).cluster_weights == [1.0, 0.5]


def test_tags_become_one_indicator_per_frequent_tag():
    table, names = tag_indicators(["red leather strap", "red strap", "", "blue  leather"], "tags", max_tags=3)
    assert names == ["tags:leather", "tags:red", "tags:strap"]  # by count, ties in sorted order; "blue" dropped
    assert table.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 0], [1, 0, 0]]
    table, names = tag_indicators(["a;b c", "b c"], "t", separator=";")
    assert names == ["t:b c", "t:a"] and table.tolist() == [[1, 1], [1, 0]]


def test_a_csv_tag_column_becomes_attributes(tmp_path):
    from selfsup_clusters.data import load_dataset
    from tests.test_datasets import data_config, png

    rows = ["path,class,split,tags,heel"] + [
        f"{png(tmp_path / f'{i}.png')},{'ab'[i % 2]},{'train' if i < 6 else 'test'},{tags},{heel}"
        for i, (tags, heel) in enumerate([("red;strap", "high"), ("red", "flat"), ("", "mid"), ("strap;red", "high"),
                                          ("blue", "flat"), ("red;blue", "mid"), ("red", "high"), ("x", "flat")])]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(data_config(name=f"csv:{tmp_path / 't.csv'}", **{
        "csv.tag_columns": "[tags]", "csv.tag_separator": ";", "csv.max_tags": 2}))
    assert data.attribute_names == ["heel=flat", "heel=high", "heel=mid", "tags:red", "tags:blue"]
    assert len(data.train) == 6 and data.train.attributes[:, 3:].sum(dim=0).tolist() == [4, 2]
    with pytest.raises(Exception, match="no column 'tag'.*data.csv.tag_columns"):
        load_dataset(data_config(name=f"csv:{tmp_path / 't.csv'}", **{"csv.tag_columns": "[tag]"}))


def test_categorical_columns_become_indicators_whose_levels_are_nested():
    g = torch.Generator().manual_seed(0)
    colour, size = torch.randint(0, 5, (200,), generator=g), torch.randint(0, 2, (200,), generator=g)
    a, a_names = categorical_indicators(colour, ["blue", "green", "red", "white", "black"], "colour")
    b, b_names = categorical_indicators(size, ["0", "1"], "big")
    assert a_names[0] == "colour=blue" and b_names == ["big"] and torch.equal(a.argmax(dim=1), colour)
    table = torch.cat([a, b], dim=1)
    levels = [attribute_clusters(table, k, a_names + b_names).ids[0] for k in range(1, 7)]
    assert [int(ids.max()) + 1 for ids in levels] == [2, 4, 6, 8, 10, 10]  # at most 2^K, here colour x size
    for coarse, fine in zip(levels, levels[1:], strict=False):
        assert all(coarse[fine == c].unique().numel() == 1 for c in fine.unique())


@needs_fashion_mnist
@needs_wordnet
def test_composite_run_logs_statistics_per_part(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "method=cl-infonce", "clusters.spec=wordnet:7@0.5+kmeans:6",
                                 "clusters.warmup=1", "eval.linear=false", f"out={out}"]))
    records = metrics(out)
    # The fixed part from the first epoch, the k-means part once its warm-up is over.
    assert [row["name"] for row in records[0]["clusters"]] == ["wordnet7"]
    assert [row["name"] for row in records[1]["clusters"]] == ["kmeans6"]
    assert records[0]["clusters"][0]["num_clusters"] == 3 and records[1]["clusters"][0]["num_clusters"] == 6
    final = json.loads((out / "final.json").read_text())
    assert final["config"]["clusters"]["spec"] == "wordnet:7@0.5+kmeans:6"


@needs_fashion_mnist
def test_ce_with_a_kmeans_part_refuses_a_warmup(capsys, tmp_path):
    assert main(["train", "--method", "ce", "--clusters", "labels+kmeans:5", "--out", str(tmp_path / "r"),
                 *TINY, "clusters.warmup=1"]) == 2
    assert "use clusters.warmup=0" in capsys.readouterr().err


@needs_fashion_mnist
@needs_wordnet
def test_analyze_puts_a_composite_beside_its_parts():
    from selfsup_clusters.core.errors import UserError
    from selfsup_clusters.recipes import UserConfig
    from selfsup_clusters.studies.analyze import cluster_levels

    user = UserConfig(overrides=tuple(TINY))
    levels = dict(cluster_levels(user, ["merge:5", "wordnet:7@3+merge:5", "WordNet:7+wordnet:9"]))
    composite, seven, nine = levels["wordnet:7+wordnet:9"], levels["wordnet:7"], levels["wordnet:9"]
    assert composite["num_clusters"] == f"{seven['num_clusters']}+{nine['num_clusters']}"
    assert composite["I_Z_T"] == pytest.approx((seven["I_Z_T"] + nine["I_Z_T"]) / 2)
    weighted, merge = levels["wordnet:7@3+merge:5"], levels["merge:5"]
    for key in ("I_Z_T", "H_Z_given_T", "H_Z"):
        assert weighted[key] == pytest.approx((3 * seven[key] + merge[key]) / 4)
    with pytest.raises(UserError, match="has a k-means part"):
        cluster_levels(user, ["wordnet:7+kmeans:5"])
