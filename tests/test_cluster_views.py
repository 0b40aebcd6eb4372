"""Clusters you can see (cluster_views.py): the gallery in TensorBoard, stability between consecutive clusterings,
the assignments file, and reading it back (Python API and `selfsup-clusters clusters --run`)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.clusters.archive import ClusterFile, Clustering, GalleryRows, load_clusters, write_clusters
from selfsup_clusters.clusters.gallery import follow
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import train
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist

# labels (an auxiliary source, made once) beside k-means K=10 (from epoch 2 on, a part of a composite spec, so its
# centroids come from the features): one tiny run covers both kinds of gallery.
RUN = [*TINY, "epochs=3", "method=cl-infonce", "clusters.spec=labels+kmeans:10", "clusters.warmup=1",
       "eval.linear=false", "eval.projector=0", "log.tensorboard=true"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "run"
    train(load_config(overrides=[*RUN, f"out={out}"]))
    return out


@needs_fashion_mnist
def test_every_clustering_leaves_an_assignments_file(run_dir):
    assert sorted(p.name for p in (run_dir / "clusters").iterdir()) == [f"epoch000{e}.npz" for e in (1, 2, 3)]
    first, last = load_clusters(run_dir, 1), load_clusters(run_dir)
    assert [c.name for c in first.clusterings] == ["labels"] and last.epoch == 3
    labels = first["labels"]
    assert labels.distances is None and labels.cluster_names[0] == "T-shirt/top"
    np.testing.assert_array_equal(labels.ids, first.labels)  # the labels clustering is the labels
    kmeans = last["kmeans10"]
    assert kmeans.ids.shape == (256,) and kmeans.centroids.shape[0] == 10 and kmeans.num_clusters == 10
    # each sample's distance is to its own cluster's (unit) centroid
    np.testing.assert_allclose(np.linalg.norm(kmeans.centroids, axis=1), 1, atol=1e-5)
    assert np.isfinite(kmeans.distances).all() and kmeans.previous_epoch == 2
    rows = kmeans.gallery
    # the two largest first (a followed cluster that is one of them shares its row: "largest; follows #4 ...")
    assert all(r.startswith("largest") for r in rows.roles[:2]) and any("follows #" in r for r in rows.roles)
    assert len(set(rows.clusters.tolist())) == len(rows.clusters)  # no cluster drawn twice
    for cluster, samples in zip(rows.clusters, rows.samples, strict=True):
        inside = samples[samples >= 0]
        assert (kmeans.ids[inside] == cluster).all()
        assert (np.diff(kmeans.distances[inside]) >= 0).all()  # nearest the centroid first


@needs_fashion_mnist
def test_stability_and_sizes_go_to_metrics_and_the_gallery_to_tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = metrics(run_dir)
    rows = [{row["name"]: row for row in record.get("clusters", [])} for record in records]
    assert "stability_NMI" not in rows[1]["kmeans10"]  # the first k-means clustering: nothing to compare with
    third = rows[2]["kmeans10"]
    assert 0 <= third["stability_NMI"] <= 1 and third["stability_to_epoch"] == 2
    assert third["stability_NMI"] == pytest.approx(load_clusters(run_dir, 3)["kmeans10"].stability_nmi)
    assert sum(third["size_histogram"]["counts"]) + third["size_histogram"]["empty"] == 10
    assert third["assignments"] == "clusters/epoch0003.npz"

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"clusters/labels/gallery", "clusters/kmeans10/gallery"} <= set(images)
    assert [e.step for e in events.Images("clusters/kmeans10/gallery")] == [4, 8]  # before epochs 2 and 3
    picture = events.Images("clusters/kmeans10/gallery")[-1]
    assert picture.width > 400 and picture.height > 200
    assert [e.value for e in events.Scalars("clusters/kmeans10/stability_NMI")] == pytest.approx(
        [third["stability_NMI"]])
    assert "clusters/kmeans10/stability_AMI" in events.Tags()["scalars"]
    assert "clusters/kmeans10/sizes" in events.Tags()["histograms"]


@needs_fashion_mnist
def test_the_cli_draws_the_gallery_offline_and_says_what_is_missing(run_dir, tmp_path, capsys):
    from matplotlib.image import imread

    out = tmp_path / "gallery.png"
    assert main(["clusters", "--run", str(run_dir), "--epoch", "2", "--out", str(out)]) == 0
    picture = imread(out)
    assert picture.shape[0] > 200 and picture.shape[1] > 400
    assert "kmeans10: K=10" in capsys.readouterr().out

    assert main(["clusters", "--run", str(run_dir), "--epoch", "7"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "epoch 7" in error and "epochs 1-3" in error
    assert main(["clusters", "--run", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no cluster assignments" in error
    assert main(["clusters", "--out", str(out)]) == 2 and "--run" in capsys.readouterr().err


@needs_fashion_mnist
def test_a_resumed_run_compares_and_follows_clusters_as_an_uninterrupted_one(tmp_path, monkeypatch):
    from selfsup_clusters.training.trainer import resume

    overrides = [*RUN, "epochs=2", "clusters.spec=kmeans:10", "clusters.warmup=0", "log.tensorboard=false"]
    train(load_config(overrides=[*overrides, f"out={tmp_path / 'whole'}"]))
    interrupted_run([*overrides, f"out={tmp_path / 'parts'}"], monkeypatch)  # stopped after epoch 1
    resume(tmp_path / "parts")
    whole, parts = load_clusters(tmp_path / "whole")["kmeans10"], load_clusters(tmp_path / "parts")["kmeans10"]
    assert parts.previous_epoch == whole.previous_epoch == 1  # the previous clustering came back from its file
    assert (parts.stability_nmi, parts.gallery.roles) == (whole.stability_nmi, whole.gallery.roles)
    np.testing.assert_array_equal(parts.gallery.samples, whole.gallery.samples)


def test_a_dataset_without_images_in_memory_skips_the_gallery_in_one_line(tmp_path, capsys):
    from selfsup_clusters.clusters import Assignments, build_cluster_source
    from selfsup_clusters.data.base import AuxiliaryInfo, Split
    from selfsup_clusters.training.cluster_views import after_clustering
    from selfsup_clusters.training.logger import RunLogger

    labels = torch.arange(40) % 4
    source = build_cluster_source("labels", AuxiliaryInfo(labels, list("abcd")))
    run = SimpleNamespace(cfg=SimpleNamespace(seed=0, data=SimpleNamespace(name="imagefolder:x")), out_dir=tmp_path,
                          steps_per_epoch=5, data=SimpleNamespace(train=Split(None, labels), class_names=list("abcd")),
                          cluster_source=source, assignments=source.assign(None))
    assert isinstance(run.assignments, Assignments)
    logger = RunLogger(tmp_path, tensorboard=True)
    for epoch in (0, 1):
        (row,) = after_clustering(run, epoch, None, ["labels"], logger)
    logger.close()
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("cluster gallery skipped")
    assert row["assignments"] == "clusters/epoch0002.npz" and load_clusters(tmp_path)["labels"].ids.shape == (40,)


def test_followed_clusters_are_found_again_after_k_means_renumbers_them(tmp_path):
    before = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    now = np.array([5, 5, 4, 3, 3, 1, 1, 1])  # cluster 0 went mostly to 5, 2 entirely to 1
    previous = Clustering("kmeans3", before, 3, gallery=GalleryRows(np.array([0, 2, 1]), ["random", "follows #9 (50% "
                                                                    "kept)", "largest"], np.zeros((3, 8), int)))
    assert follow(previous, now) == [(5, "follows #0 (67% kept)"), (1, "follows #2 (100% kept)")]
    record = ClusterFile(1, 0, np.arange(8), np.zeros(8, int), ["x"], [previous])
    write_clusters(tmp_path, record)
    back = load_clusters(tmp_path, 1)["kmeans3"]
    assert back.gallery.roles == previous.gallery.roles and math.isnan(back.stability_nmi)
    (tmp_path / "clusters" / "epoch0002.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable assignments file"):
        load_clusters(tmp_path, 2)


def test_a_followed_cluster_already_shown_is_one_row_with_both_roles_and_is_followed_on():
    from selfsup_clusters.clusters.gallery import choose_rows

    before = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    now = np.array([6, 6, 6, 6, 6, 6, 5, 5, 4, 7])  # the followed cluster 0 is now inside the largest, 6
    previous = Clustering("kmeans8", before, 8, gallery=GalleryRows(np.array([0]), ["random"], np.zeros((1, 8), int)))
    chosen, roles = choose_rows(now, 8, np.random.default_rng(0), previous)
    assert chosen.count(6) == 1 and roles[chosen.index(6)] == "largest; follows #0 (100% kept)"
    shown = Clustering("kmeans8", now, 8, gallery=GalleryRows(np.array(chosen), roles, np.zeros((len(chosen), 8), int)))
    assert (6, "follows #6 (100% kept)") in follow(shown, now)  # the lineage goes on from the merged row
