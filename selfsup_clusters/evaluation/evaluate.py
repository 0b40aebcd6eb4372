"""Evaluation shared by every method: feature extraction with norm layers in eval mode, weighted kNN."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.core.progress import progress


@torch.no_grad()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    modules: list[nn.Module] | None = None,
) -> torch.Tensor:
    """L2-normalised features of every batch of network input (e.g. `Batches.eval`), (N, D) float32 on the CPU.

    The `modules` are put in eval mode for the pass (BatchNorm uses running statistics) and restored afterwards.
    """
    modules = modules or []
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        return torch.cat([F.normalize(encode(x).float(), dim=1).cpu() for x in batches])
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)


@torch.no_grad()
def weighted_knn(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier of Wu et al. (2018), as in solo-learn and the MoCo demo.

    Features are L2-normalised (N, D); each test sample votes over its k most cosine-similar training samples
    with weight exp(similarity / temperature). Training samples labelled -1 are ignored.
    """
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train_features.shape[0])
    correct = 0
    for start in range(0, test_features.shape[0], chunk_size):
        sims = test_features[start : start + chunk_size] @ train_features.T
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        correct += (votes.argmax(dim=1) == test_labels[start : start + chunk_size]).sum().item()
    return correct / test_features.shape[0]


def raw_pixel_features(train_images: torch.Tensor, test_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixels as features (centred on the training mean, L2-normalised): the floor a representation should
    beat."""
    train = train_images.flatten(1).float()
    mean = train.mean(dim=0, keepdim=True)
    return F.normalize(train - mean, dim=1), F.normalize(test_images.flatten(1).float() - mean, dim=1)


def raw_pixel_knn(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                  test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1) -> float:
    """The same kNN on raw pixels."""
    train_features, test_features = raw_pixel_features(train_images, test_images)
    return weighted_knn(train_features, train_labels, test_features, test_labels, k, temperature)


PROBE_L2 = 3e-3  # the fixed-penalty probe's L2 (protocol "linear_fixed"), chosen on mean validation accuracy
# over all methods (docs/evaluation.md); the deciding probe chooses its own per representation (tuned_probe)


def standardiser(features: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> (x - mean) / std with the statistics of `features` (the probe's training features)."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    return lambda x: (x.float() - mean) / std


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iterations: int = 100,
               start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features x (N, D) with labels y (N,): the (weight (C, D),
    bias (C,)) minimising mean cross-entropy + l2 / 2 * |W|^2, by full-batch L-BFGS (strong Wolfe line search,
    `max_iterations`) from zero or from `start` (a warm start along a penalty grid). Deterministic.

    The gradient is written out (softmax minus the one-hot labels) rather than taken by autograd, which halves an
    iteration's time on a CPU."""
    weight = nn.Parameter(torch.zeros(num_classes, x.shape[1]) if start is None else start[0].clone())
    bias = nn.Parameter(torch.zeros(num_classes) if start is None else start[1].clone())
    targets = F.one_hot(y, num_classes).float()
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iterations, history_size=10,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    @torch.no_grad()
    def objective() -> torch.Tensor:
        log_p = torch.log_softmax(torch.addmm(bias, x, weight.t()), dim=1)
        residual = (log_p.exp() - targets) / len(x)
        weight.grad = residual.t() @ x + l2 * weight
        bias.grad = residual.sum(dim=0)
        return -(targets * log_p).sum() / len(x) + l2 / 2 * weight.pow(2).sum()

    optimizer.step(objective)
    return weight.detach(), bias.detach()


def linear_accuracy(model: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of a fitted (weight, bias) on standardised features x."""
    predictions = torch.addmm(model[1], x, model[0].t()).argmax(dim=1)
    return (predictions == labels).float().mean().item()


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    l2: float = PROBE_L2,
    max_iterations: int = 100,
    seed: int = 0,
    show_progress: bool = False,
) -> float:
    """Top-1 test accuracy of a linear classifier on frozen, precomputed features, at one L2 penalty.

    Features standardised with the training mean and std, multinomial logistic regression fitted on the whole
    training set at once by L-BFGS (`fit_linear`), as CLIP's linear probes are (Radford et al. 2021, with
    scikit-learn's L-BFGS); samples labelled -1 are skipped. The penalty chosen per representation on a split of
    the training features: tuned_probe. Deterministic: `seed` and `show_progress` are accepted for the
    callers' sake and change nothing.
    """
    keep = train_labels >= 0
    x, y = train_features[keep].float(), train_labels[keep]
    standardise = standardiser(x)
    num_classes = int(max(y.max(), test_labels.max())) + 1
    model = fit_linear(standardise(x), y, num_classes, l2, max_iterations)
    return linear_accuracy(model, standardise(test_features), test_labels)


def choose_penalty(features: torch.Tensor, labels: torch.Tensor, grid: Sequence[float], holdout: float = 0.2,
                   seed: int = 0, max_iterations: int = 100) -> tuple[float, dict[float, float]]:
    """The L2 penalty of `grid` whose probe scores best on a stratified `holdout` of the probe's own training
    features (labelled ones; the test set is never read), with each penalty's holdout accuracy. The fits run from
    the strongest penalty to the weakest, each warm-started from the previous solution; a tie goes to the stronger
    penalty."""
    from sklearn.model_selection import train_test_split

    keep = labels >= 0
    x, y = features[keep].float(), labels[keep]
    counts = torch.bincount(y)
    # stratified where every class can give the holdout a sample and keep one (tiny sets: a plain random split)
    stratified = int(counts[counts > 0].min()) >= 2 and holdout * len(y) >= len(counts[counts > 0])
    stratify = y.numpy() if stratified else None
    fit, held = train_test_split(np.arange(len(y)), test_size=holdout, random_state=seed, stratify=stratify)
    fit, held = torch.from_numpy(fit), torch.from_numpy(held)
    standardise = standardiser(x[fit])
    x_fit, x_held, num_classes = standardise(x[fit]), standardise(x[held]), int(y.max()) + 1
    scores, model = {}, None
    for l2 in sorted(set(grid), reverse=True):
        model = fit_linear(x_fit, y[fit], num_classes, l2, max_iterations, start=model)
        scores[l2] = linear_accuracy(model, x_held, y[held])
    best = max(scores, key=lambda l2: (scores[l2], l2))
    return best, scores


def tuned_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                test_labels: torch.Tensor, grid: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """The deciding linear probe: its L2 penalty chosen per representation on a split of the training features
    (`choose_penalty`), then the probe refitted on all of them at that penalty (`linear_probe`), as Kornblith et
    al. (2019) choose a penalty per model. (test top-1, the chosen penalty)."""
    l2, _ = choose_penalty(train_features, train_labels, grid, seed=seed)
    return linear_probe(train_features, train_labels, test_features, test_labels, l2=l2), l2


def protocol_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                    test_labels: torch.Tensor, cfg, seed: int = 0) -> dict[str, float]:
    """Every protocol of the family on the same features (`cfg` an EvalConfig: the penalty grid, the fixed
    penalty, kNN's temperature and the protocols to check against, protocols.FAMILY): the deciding probe's top-1
    with its chosen penalty (`linear_l2`), and each other protocol's top-1 under its metric key."""
    from selfsup_clusters.evaluation.protocols import checked

    scores: dict[str, float] = {}
    for protocol in checked(cfg.protocols):
        if protocol.name == "linear":
            scores["linear_top1"], scores["linear_l2"] = tuned_probe(train_features, train_labels, test_features,
                                                                     test_labels, cfg.probe_l2, seed)
        elif protocol.name == "linear_fixed":  # the same probe where the chosen penalty is the fixed one
            scores[protocol.metric] = scores["linear_top1"] if scores["linear_l2"] == cfg.probe_fixed_l2 else \
                linear_probe(train_features, train_labels, test_features, test_labels, l2=cfg.probe_fixed_l2)
        else:
            scores[protocol.metric] = weighted_knn(train_features, train_labels, test_features, test_labels,
                                                   k=protocol.knn_k, temperature=cfg.knn_t)
    return scores


def linear_probe_augmented(
    encode: Callable[[torch.Tensor], torch.Tensor],
    epoch_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int,
    device: torch.device | str = "cpu",
    lr: float = 1e-2,
    weight_decay: float = 1e-5,
    seed: int = 0,
    show_progress: bool = False,
) -> float:
    """Top-1 test accuracy of a linear classifier trained on augmented views through a frozen encoder.

    `epoch_batches(epoch)` yields (network input, labels) batches; `encode` is the frozen encoder (the caller
    sets eval mode). Features are L2-normalised like `test_features` (the centre views), then a BatchNorm without
    affine parameters stands in for precomputed standardisation (as in MAE's linear probe); AdamW (lr 1e-2), cosine over
    the epochs, cross-entropy; labels -1 are skipped.
    """
    num_classes = int(test_labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Sequential(nn.BatchNorm1d(test_features.shape[1], affine=False),
                             nn.Linear(test_features.shape[1], num_classes)).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for epoch in progress(range(epochs), desc="linear probe (augmented)", enabled=show_progress, unit="epoch"):
        for x, labels in epoch_batches(epoch):
            keep = labels >= 0
            with torch.no_grad():
                features = F.normalize(encode(x).float(), dim=1)[keep]
            with torch.enable_grad():
                loss = F.cross_entropy(head(features), labels[keep])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
        schedule.step()
    head.eval()
    with torch.no_grad():
        predictions = head(test_features.to(device)).argmax(dim=1).cpu()
    return (predictions == test_labels).float().mean().item()


def cluster_quality(features: torch.Tensor, labels: torch.Tensor, seed: int = 0,
                    show_progress: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """How well the representation clusters: spherical k-means (FAISS) with K = number of classes on the
    features, scored against the labels with NMI, AMI and ARI (scikit-learn); and the k-means id of each labelled
    sample."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    from selfsup_clusters.clusters import KMeansOptions, run_kmeans

    keep = labels >= 0
    features, labels = features[keep], labels[keep].numpy()
    k = int(labels.max()) + 1
    options = KMeansOptions(seed=seed, nredo=3, progress=show_progress)
    ids = run_kmeans(features, [k], options, warn=False).ids[0].numpy()
    return {
        "nmi": float(normalized_mutual_info_score(labels, ids)),
        "ami": float(adjusted_mutual_info_score(labels, ids)),
        "ari": float(adjusted_rand_score(labels, ids)),
    }, ids


def evaluate_features(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, cfg, knn: bool = True, linear: bool = False,
                      clusters: bool = False, seed: int = 0,
                      show_progress: bool = False) -> tuple[dict, np.ndarray | None]:
    """The harness every method shares, on L2-normalised backbone features: weighted kNN (with its k and T),
    the linear probe with the rest of the protocol family (`protocol_scores`) and cluster quality (NMI/AMI/ARI);
    with the k-means ids of the test samples when `clusters`. `cfg` is an EvalConfig; `show_progress`: bars for
    k-means. Empty when there are no labels to score against."""
    if not (train_labels >= 0).any() or not (test_labels >= 0).any():
        return {}, None
    results: dict = {}
    ids = None
    if knn:
        results.update(knn_top1=weighted_knn(train_features, train_labels, test_features, test_labels,
                                             k=cfg.knn_k, temperature=cfg.knn_t),
                       knn_k=cfg.knn_k, knn_t=cfg.knn_t)
    if linear:
        results.update(protocol_scores(train_features, train_labels, test_features, test_labels, cfg, seed))
    if clusters:
        scores, ids = cluster_quality(test_features, test_labels, seed=seed, show_progress=show_progress)
        results.update(scores)
    return results, ids
