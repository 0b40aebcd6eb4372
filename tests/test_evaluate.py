"""The evaluation harness against references: kNN against a brute-force loop (several chunks, k above the bank
size), the linear probe blind to test labels and standardised with training statistics only, Spearman against
scipy, and an atomic checkpoint write."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.evaluation import evaluate
from selfsup_clusters.evaluation.evaluate import linear_probe, weighted_knn


def brute_force_knn_predictions(train, train_labels, test, k, t):
    """Wu et al.'s weighted kNN, one test sample at a time, written out."""
    keep = train_labels >= 0
    train, train_labels = train[keep], train_labels[keep]
    num_classes = int(train_labels.max()) + 1
    predictions = []
    for x in test:
        sims = [(float(x @ f), int(label)) for f, label in zip(train, train_labels, strict=True)]
        sims.sort(key=lambda pair: -pair[0])
        votes = [0.0] * num_classes
        for sim, label in sims[: min(k, len(sims))]:
            votes[label] += torch.tensor(sim / t, dtype=torch.float32).exp().item()
        predictions.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return torch.tensor(predictions)


def features(n, dim, seed):
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("k", [5, 500])  # 500 > the 60 labelled training samples: every one votes
def test_weighted_knn_matches_a_brute_force_reference_sample_by_sample(k):
    train, test = features(70, 8, 0), features(90, 8, 1)
    train_labels = torch.randint(0, 4, (70,), generator=torch.Generator().manual_seed(2))
    train_labels[:10] = -1  # unlabelled: ignored
    expected = brute_force_knn_predictions(train, train_labels, test, k, 0.1)
    assert len(expected.unique()) > 1
    # Scored against its own predictions the classifier is always right, against shifted ones never: this checks
    # every test sample's prediction, over 4 chunks of 25 (the last one short).
    assert weighted_knn(train, train_labels, test, expected, k=k, temperature=0.1, chunk_size=25) == 1.0
    assert weighted_knn(train, train_labels, test, (expected + 1) % 4, k=k, temperature=0.1, chunk_size=25) == 0.0
    one_chunk = weighted_knn(train, train_labels, test, expected, k=k, temperature=0.1, chunk_size=1024)
    assert one_chunk == 1.0


def probe(monkeypatch, x, y, x_test, y_test):
    """The probe's accuracy and the (weight, bias) it fitted."""
    made = []
    fit = evaluate.fit_linear

    def recording_fit(*args, **kwargs):
        made.append(fit(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(evaluate, "fit_linear", recording_fit)
    accuracy = linear_probe(x, y, x_test, y_test)
    (classifier,) = made
    return accuracy, classifier


def blobs(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.eye(6)[:3][labels] * 2 + torch.randn(n, 6, generator=g) + shift
    return x, labels


def test_linear_probe_never_sees_test_labels_and_standardises_with_training_statistics(monkeypatch):
    x, y = blobs(200, 0)
    x_test, y_test = blobs(80, 1, shift=torch.tensor([0.0, 0, 0, 3, -2, 5]))  # the test set's statistics differ
    accuracy, classifier = probe(monkeypatch, x, y, x_test, y_test)
    weights = [p.clone() for p in classifier]

    # The classifier, standardised with the training mean and std, predicts what the probe scored.
    mean, std = x.mean(dim=0), x.std(dim=0)
    predictions = torch.addmm(classifier[1], (x_test - mean) / std, classifier[0].t()).argmax(dim=1)
    assert accuracy == pytest.approx((predictions == y_test).float().mean().item())
    assert 0.2 < accuracy < 1.0

    # Permuted test labels: the same classifier, only the score changes.
    permuted = y_test[torch.randperm(80, generator=torch.Generator().manual_seed(3))]
    permuted_accuracy, again = probe(monkeypatch, x, y, x_test, permuted)
    assert all(torch.equal(a, b) for a, b in zip(weights, again, strict=True))
    assert permuted_accuracy == pytest.approx((predictions == permuted).float().mean().item())
    # Other test features: the same classifier too (nothing about the test set reaches training).
    _, other = probe(monkeypatch, x, y, x_test * 3 + 1, y_test)
    assert all(torch.equal(a, b) for a, b in zip(weights, other, strict=True))


def test_spearman_of_the_analysis_matches_scipy():
    from scipy import stats

    from selfsup_clusters.studies.analyze import correlations

    g = torch.Generator().manual_seed(0)
    rows = [{"I_Z_T": float(i), "H_Z_given_T": float(v), "linear_top1": float(a), "knn_top1": float(b)}
            for i, v, a, b in zip(torch.randperm(7, generator=g), torch.rand(7, generator=g),
                                  torch.rand(7, generator=g), torch.tensor([0.5, 0.5, 0.2, 0.9, 0.1, 0.5, 0.3]),
                                  strict=True)]  # knn_top1 has ties
    for metric in ("linear_top1", "knn_top1"):
        rho = correlations(rows, metric)
        assert set(rho) == {"I(Z;T)", "H(Z|T)", "I(Z;T) given H(Z|T)", "H(Z|T) given I(Z;T)"}
        for measure, name in (("I_Z_T", "I(Z;T)"), ("H_Z_given_T", "H(Z|T)")):
            expected = stats.spearmanr([r[measure] for r in rows], [r[metric] for r in rows]).statistic
            assert rho[name].mean == pytest.approx(expected, abs=1e-12)
            assert rho[name].low < rho[name].mean < rho[name].high and rho[name].n == 7


def test_a_failed_checkpoint_write_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    from selfsup_clusters.core.files import WriteFailed
    from selfsup_clusters.training import checkpoint
    from selfsup_clusters.training.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"epoch": 0, "weights": torch.arange(4)}, path)
    real_save = torch.save

    def half_written(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # the disk fills up half-way
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", half_written)
    with pytest.raises(WriteFailed, match=r"cannot write last.pt in .*checkpoints: No space left on device"):
        save_checkpoint({"epoch": 1, "weights": torch.zeros(4)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and torch.equal(state["weights"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
