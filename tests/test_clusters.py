"""Cluster sources: k-means, WordNet levels, attribute combinations, statistics."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_mutual_info_score

from selfsup_clusters.clusters import (
    Assignments,
    ClusterError,
    KMeansOptions,
    build_cluster_source,
    class_synsets,
    cluster_statistics,
    conditional_entropy,
    entropy,
    load_wordnet,
    mutual_information,
    rank_attributes,
    run_kmeans,
    statistics_table,
    synset_for_wnid,
    wordnet_levels,
)
from selfsup_clusters.data.base import AuxiliaryInfo
from selfsup_clusters.studies.tables import format_table

FASHION_MNIST = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
needs_wordnet = pytest.mark.skipif(
    not Path("/usr/share/wordnet/data.noun").is_file(),
    reason="WordNet 3.0 not installed (/usr/share/wordnet/data.noun; apt-get install wordnet-base)",
)


def blobs(num_blobs: int = 5, per_blob: int = 60, dim: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(num_blobs, dim))
    truth = np.repeat(np.arange(num_blobs), per_blob)
    points = centers[truth] + 0.1 * rng.normal(size=(truth.size, dim))
    return torch.from_numpy(points.astype(np.float32)), truth


# ---- k-means ----------------------------------------------------------------


@pytest.fixture
def one_faiss_thread():
    """FAISS's OpenMP threads spin-wait; on a busy 2-core test machine that turns
    milliseconds into seconds, and these problems are far too small to need threads."""
    faiss = pytest.importorskip("faiss")
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


def test_kmeans_recovers_blobs_deterministically(one_faiss_thread):
    features, truth = blobs()
    # FAISS seeds from random samples, so one start can put two centroids in
    # one blob; ten restarts keep the best objective.
    options = KMeansOptions(nredo=10, seed=0)
    result = run_kmeans(features, [5, 3], options)
    ids, centroids, distances = result.ids[0], result.centroids[0], result.distances[0]
    assert adjusted_mutual_info_score(truth, ids.numpy()) > 0.95
    assert ids.dtype == torch.int64 and sorted(ids.unique().tolist()) == list(range(5))
    assert result.num_clusters == [5, 3]
    assert torch.allclose(centroids.norm(dim=1), torch.ones(5), atol=1e-5)
    # each sample's distance to its own centroid
    expected = (F.normalize(features, dim=1) - centroids[ids]).norm(dim=1)
    assert distances.shape == (len(features),) and torch.allclose(distances, expected, atol=1e-4)
    again = run_kmeans(features, [5, 3], options)
    for first, second in zip(result.ids, again.ids, strict=True):
        assert torch.equal(first, second)


def test_pcl_concentration_formula():
    from selfsup_clusters.methods.baselines.pcl import pcl_concentration

    ids = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    distance = np.sqrt([1.0, 9.0, 4.0, 4.0, 4.0, 0.0, 0.25, 0.25])
    raw = np.array([2 / math.log(12), 2 / math.log(13), 0.0, 0.5 / math.log(12)])
    raw[2] = raw.max()  # a singleton takes the largest phi of the others
    low, high = np.percentile(raw, 10), np.percentile(raw, 90)
    clipped = np.clip(raw, low, high)
    expected = 0.2 * clipped / clipped.mean()
    got = pcl_concentration(distance, ids, 4, temperature=0.2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.max() / got.min() <= high / low + 1e-6


def test_kmeans_guards(caplog, one_faiss_thread):
    labels = torch.zeros(30, dtype=torch.int64)
    with pytest.raises(ClusterError, match=r"K=50.*N=30"):
        build_cluster_source("kmeans:10,50", AuxiliaryInfo(labels, ["a"]))
    features, _ = blobs(num_blobs=3, per_blob=10)
    with caplog.at_level(logging.WARNING, logger="selfsup_clusters.clusters"):
        source = build_cluster_source("kmeans:4,5", AuxiliaryInfo(labels, ["a"]))
        source.assign(features)
        source.assign(features)  # re-clustering next epoch does not warn again
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "N=30" in warnings[0].getMessage()
    with pytest.raises(ClusterError, match="NaN"):
        source.assign(torch.full((30, 4), float("nan")))


@pytest.mark.parametrize(
    "spec",
    [
        "kmeans",
        "kmeans:",
        "kmeans:abc",
        "kmeans:0",
        "kmeans:10,",
        "wordnet:x",
        "attributes:",
        "foo:3",
        "labels:2",
        "wordnet:1,2",
    ],
)
def test_malformed_specs(spec):
    with pytest.raises(ClusterError, match="use one of"):
        build_cluster_source(spec, AuxiliaryInfo(torch.zeros(5, dtype=torch.int64), ["a"]))


def test_none_and_labels_sources():
    labels = torch.tensor([2, 0, -1, 2, -1])
    assert build_cluster_source("none", AuxiliaryInfo(labels, ["a", "b", "c"])) is None
    source = build_cluster_source("labels", AuxiliaryInfo(labels, ["a", "b", "c"]))
    assert not source.dynamic
    result = source.assign(None)
    # class 1 is absent, so ids stay contiguous; unlabelled samples are singletons
    assert result.ids[0].tolist() == [1, 0, 2, 1, 3]
    assert result.names[0][:2] == ["a", "c"] and result.num_clusters == [4]


# ---- statistics -------------------------------------------------------------


def test_information_quantities_on_hand_tables():
    classes = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    merged = classes // 2  # clusters merge classes: Z is a function of T
    assert conditional_entropy(merged, classes) == pytest.approx(0.0)
    assert mutual_information(merged, classes) == pytest.approx(entropy(merged)) == pytest.approx(1.0)
    split = np.arange(8)  # clusters split classes: T is a function of Z
    assert mutual_information(split, classes) == pytest.approx(entropy(classes)) == pytest.approx(2.0)
    z, t = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])  # uniform 2x2, independent
    assert entropy(z) == pytest.approx(1.0)
    assert mutual_information(z, t) == pytest.approx(0.0)
    assert conditional_entropy(z, t) == pytest.approx(1.0)
    # p(z, t) = [[1/2, 0], [1/4, 1/4]]: I = H(Z) + H(T) - H(Z, T) = 1 + 0.8113 - 1.5
    z, t = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
    entropy_t = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert mutual_information(z, t) == pytest.approx(1 + entropy_t - 1.5)


def test_cluster_statistics_ignores_unlabelled_for_label_terms():
    z = torch.tensor([0, 0, 1, 1, 2, 2])
    t = torch.tensor([0, 0, 1, 1, -1, -1])
    stats = cluster_statistics(z, t)
    assert stats["num_clusters"] == 3 and stats["largest_cluster"] == stats["smallest_cluster"] == 2
    assert stats["H_Z"] == pytest.approx(math.log2(3))
    assert stats["H_Z_given_T"] == pytest.approx(0.0) and stats["I_Z_T"] == pytest.approx(1.0)
    assert stats["NMI"] == pytest.approx(1.0) and stats["AMI"] == pytest.approx(1.0)
    table = format_table([{"clusters": "labels", **stats}])
    header, rule, row = table.splitlines()
    assert header.split()[:2] == ["clusters", "num_clusters"] and row.startswith("labels") and "1.585" in row


# ---- attributes -------------------------------------------------------------


def test_attribute_ranking_and_nesting():
    table = torch.tensor(
        [
            [0, 0, 0, 1],
            [0, 1, 0, 1],
            [0, 2, 1, 0],
            [0, 3, 1, 0],
            [0, 0, 0, 1],
            [0, 1, 1, 0],
            [0, 2, 0, 1],
            [0, 3, 1, 0],
        ]
    )
    # entropies: column 0 = 0 bits, 1 = 2 bits, 2 and 3 = 1 bit each (tie: lower index first)
    assert rank_attributes(table) == [1, 2, 3, 0]
    labels = torch.zeros(8, dtype=torch.int64)
    levels = []
    for k in range(1, 5):
        source = build_cluster_source(f"attributes:{k}", AuxiliaryInfo(labels, ["a"], attributes=table,
                                                                        attribute_names=["c0", "c1", "c2", "c3"]))
        levels.append(source.assign(None).ids[0].numpy())
        assert sorted(set(levels[-1].tolist())) == list(range(levels[-1].max() + 1))
    assert [len(set(ids.tolist())) for ids in levels] == [4, 6, 6, 6]
    assert_nested(levels)
    assert source.assign(None).names[0][0].startswith("c1=0,c2=0")
    with pytest.raises(ClusterError, match="attributes:5"):
        build_cluster_source("attributes:5", AuxiliaryInfo(labels, ["a"], attributes=table))
    with pytest.raises(ClusterError, match="no.*attributes|has none"):
        build_cluster_source("attributes:1", AuxiliaryInfo(labels, ["a"]))


def assert_nested(levels: list[np.ndarray]) -> None:
    """Each partition refines the previous one: a finer cluster maps to one coarser cluster."""
    for coarse, fine in zip(levels, levels[1:], strict=False):
        pairs = set(zip(fine.tolist(), coarse.tolist(), strict=True))
        assert len(pairs) == len(set(fine.tolist()))


# ---- WordNet ----------------------------------------------------------------


def test_wnid_parsing():
    assert synset_for_wnid("n02084071") == 2084071
    with pytest.raises(ClusterError, match="8 digits"):
        synset_for_wnid("dog")
    assert class_synsets(["x", "y"], wnids=["n00001740", "n02084071"]) == [1740, 2084071]
    with pytest.raises(ClusterError, match="wnids"):
        class_synsets(["airplane", "truck"])


def test_missing_wordnet_dir(tmp_path):
    with pytest.raises(ClusterError, match="apt-get install wordnet-base"):
        build_cluster_source("wordnet:3", AuxiliaryInfo(torch.arange(10), FASHION_MNIST), wordnet_dir=str(tmp_path))


@needs_wordnet
def test_wordnet_levels_on_fashion_mnist():
    wordnet = load_wordnet()
    assert wordnet.lemmas(2084071)[0] == "dog" and wordnet.hypernym_path(2084071)[0] == 1740
    labels = torch.arange(10).repeat_interleave(3)
    levels = wordnet_levels(class_synsets(FASHION_MNIST), wordnet)
    results = [
        build_cluster_source(f"wordnet:{level}", AuxiliaryInfo(labels, FASHION_MNIST)).assign(None)
        for level in levels
    ]
    counts = {level: result.num_clusters[0] for level, result in zip(levels, results, strict=True)}
    assert counts[1] == 1 and counts[5] == 1 and counts[7] == 3 and counts[levels[-1]] == 10
    assert results[4].names[0] == ["artifact"]
    assert set(results[6].names[0]) == {"clothing", "footwear", "container"}
    assert torch.equal(results[-1].ids[0], labels)  # deepest level = the classes, in class order
    assert_nested([result.ids[0].numpy() for result in results])
    rows = statistics_table(AuxiliaryInfo(labels, FASHION_MNIST))
    assert [row["clusters"] for row in rows] == ["labels"] + [f"wordnet:{level}" for level in levels]


@needs_wordnet
def test_wordnet_bad_wnid():
    with pytest.raises(ClusterError, match="no noun synset"):
        build_cluster_source("wordnet:2", AuxiliaryInfo(torch.arange(2), ["a", "b"], wnids=["n00001740", "n00001741"]))


@needs_wordnet
def test_a_wordnet_level_deeper_than_every_class_is_an_error_and_a_partly_shallow_one_a_warning(caplog, monkeypatch):
    from selfsup_clusters.clusters import sources

    monkeypatch.setattr(sources, "_warned", set())  # once per process: as if no earlier test had built wordnet:9
    aux = AuxiliaryInfo(torch.arange(10), FASHION_MNIST)
    with pytest.raises(ClusterError, match=r"^wordnet:99 is deeper than every class: the deepest class "
                                           r"\('T-shirt/top'\) is at depth 10, so wordnet:10 is the deepest useful "
                                           r"level; use wordnet:1\.\.10$"):
        build_cluster_source("wordnet:99", aux)
    with caplog.at_level(logging.WARNING, logger="selfsup_clusters.clusters"):
        assert build_cluster_source("wordnet:9", aux).num_clusters == [9]
        build_cluster_source("wordnet:9", aux)  # the next run of a comparison: said once already
        build_cluster_source("wordnet:8", aux)  # every class is at least 8 deep
        statistics_table(aux)  # lists the levels up to the deepest: no warnings
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "wordnet:9: 2 of 10 classes are shallower than depth 9 (e.g. 'Bag' at 8, 'Ankle boot' at 8) and keep their "
        "own synset as their cluster"]


def test_check_level_on_a_hand_made_hierarchy():
    from selfsup_clusters.clusters.wordnet import WordNet, check_level

    noun = WordNet(b"00001740 03 n 01 entity 0 000 | the root\n"
                   b"00002000 03 n 01 animal 0 001 @ 00001740 n 0000 | depth 2\n"
                   b"00003000 03 n 01 cat 0 001 @ 00002000 n 0000 | depth 3\n"
                   b"00004000 03 n 01 rock 0 001 @ 00001740 n 0000 | depth 2\n")
    classes, synsets = ["cat", "rock"], [3000, 4000]
    assert check_level(2, synsets, classes, noun) is None
    assert check_level(3, synsets, classes, noun) == ("wordnet:3: 1 of 2 classes are shallower than depth 3 (e.g. "
                                                      "'rock' at 2) and keep their own synset as their cluster")
    with pytest.raises(ClusterError, match=r"the deepest class \('cat'\) is at depth 3, so wordnet:3 is the deepest"):
        check_level(4, synsets, classes, noun)


# ---- checkpointing ----------------------------------------------------------


def test_assignments_state_dict_round_trip(tmp_path):
    original = Assignments(
        ids=[torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0])],
        centroids=[torch.eye(2), torch.ones(1, 2) / math.sqrt(2)],
        distances=[torch.tensor([0.1, 0.3, 0.2]), torch.tensor([0.2, 0.1, 0.0])],
        names=[["x", "y"], ["z"]],
    )
    path = tmp_path / "assignments.pt"
    torch.save({"assignments": original.state_dict()}, path)
    loaded = Assignments.from_state_dict(torch.load(path, weights_only=True)["assignments"])
    assert loaded.num_clusters == [2, 1] and loaded.names == original.names
    for field in ("ids", "centroids", "distances"):
        for a, b in zip(getattr(original, field), getattr(loaded, field), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ClusterError):
        Assignments.from_state_dict({})


# ---- synthetic merges ---------------------------------------------------------


def _merged_partition(num_classes: int, groups: int, seed: int) -> np.ndarray:
    """Group id of each class under merge:`groups` (one sample per class, in class order)."""
    from selfsup_clusters.clusters.synthetic import merged_classes

    return merged_classes(np.arange(num_classes), num_classes, groups, seed).ids[0].numpy()


def _as_blocks(group_of_class: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(group_of_class == g).tolist()) for g in np.unique(group_of_class)}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_synthetic_merges_are_nested_for_every_pair(seed):
    partitions = {k: _merged_partition(10, k, seed) for k in range(1, 11)}
    for k, groups in partitions.items():
        assert sorted(np.unique(groups).tolist()) == list(range(k)), f"merge:{k} must have exactly {k} groups"
    for k1 in range(1, 11):
        for k2 in range(k1 + 1, 11):
            for block in _as_blocks(partitions[k2]):
                parents = {int(partitions[k1][c]) for c in block}
                assert len(parents) == 1, f"seed {seed}: merge:{k2} group {sorted(block)} spans merge:{k1} {parents}"


def test_synthetic_merge_sizes_stay_balanced():
    sizes = sorted(np.bincount(_merged_partition(10, 3, seed=0)).tolist())
    assert sizes == [2, 4, 4]
    for num_classes in range(1, 41):
        for k in range(1, num_classes + 1):
            counts = np.bincount(_merged_partition(num_classes, k, seed=0))
            assert counts.max() <= 2 * counts.min(), (num_classes, k, counts)


def test_synthetic_merges_differ_between_seeds():
    for k in (2, 5, 9):
        assert _as_blocks(_merged_partition(10, k, seed=0)) != _as_blocks(_merged_partition(10, k, seed=1))
    assert np.array_equal(_merged_partition(10, 5, seed=3), _merged_partition(10, 5, seed=3))


def test_synthetic_merge_gives_unlabelled_samples_their_own_clusters():
    from selfsup_clusters.clusters.synthetic import merged_classes

    labels = np.array([0, 1, -1, 2, 3, -1, 0, 4])
    merged = merged_classes(labels, 5, 2, seed=0)
    ids = merged.ids[0].numpy()
    assert ids[2] == 2 and ids[5] == 3  # after the 2 merged groups, one cluster per unlabelled sample
    labelled = labels >= 0
    assert set(ids[labelled].tolist()) == {0, 1} and ids[0] == ids[6]
    assert merged.num_clusters == [4] and len(merged.names[0]) == 4
    assert np.array_equal(ids[labelled], _merged_partition(5, 2, seed=0)[labels[labelled]])
    with pytest.raises(ClusterError, match="merge:6"):
        merged_classes(labels, 5, 6)
