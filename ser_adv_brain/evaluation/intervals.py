"""Confidence intervals for UAR over speaker folds, and paired comparisons of two trainings.

A benchmark figure is the mean over folds (and seeds) of each fold's UAR on its test speakers. Its 95%
interval comes from a two-level percentile bootstrap (Davison and Hinkley, 1997, ch. 3.8): each
replicate draws the folds with replacement, then within each drawn fold its utterances with
replacement, class by class (so that every class keeps its count and UAR stays defined), and takes
the mean of the folds' UARs; the interval runs from the 2.5th to the 97.5th percentile of the
replicates. It covers both what a different set of test speakers and what a different set of
utterances of the same speakers would give.

A paired comparison of trainings A and B uses the same folds, seeds and utterances for both: every
replicate draws one set of folds and utterances and takes the difference of the two means, so that
what the two share (the hard speakers, the hard utterances) cancels. The effect is the difference of
the means; the interval is the percentile interval of the replicates; the two-sided p-value is twice
the smaller share of replicates on either side of zero (at least one over the number of replicates).
"""

from typing import NamedTuple

import torch

from ser_adv_brain.metrics import uar_of_correct

REPLICATES = 2000
LEVEL = 0.95


class Interval(NamedTuple):
    mean: float
    low: float
    high: float


class Comparison(NamedTuple):
    """A minus B: the difference of the means, its interval, and the p-value of no difference."""

    effect: float
    low: float
    high: float
    p_value: float


class FoldOutcomes(NamedTuple):
    """One fold's (or fold and seed's) test utterances: their classes and whether each was classified correctly."""

    targets: torch.Tensor
    correct: torch.Tensor


def fold_uar(fold, n_classes, index=None):
    """The fold's UAR, on the utterances ``index`` selects (all if None)."""
    targets, correct = (fold.targets, fold.correct) if index is None else (fold.targets[index], fold.correct[index])
    return uar_of_correct(correct, targets, n_classes)


def stratified_draws(targets, replicates, generator):
    """``[replicates, n]`` indices: each row a resample of the utterances with replacement, every class keeping
    its own count."""
    parts = []
    for label in targets.unique():
        members = (targets == label).nonzero().flatten()
        parts.append(members[torch.randint(len(members), (replicates, len(members)), generator=generator)])
    return torch.cat(parts, dim=1)


def drawn_uars(fold, draws, n_classes):
    """``[replicates]``: the fold's UAR on each row of ``draws`` (``stratified_draws``), computed for all rows at
    once (a loop over ``fold_uar`` made a report of a few folds take minutes); UAR as ``fold_uar`` computes it,
    the mean recall over the classes present."""
    targets, correct = fold.targets[draws], fold.correct[draws].double()
    hits = torch.zeros(len(draws), n_classes, dtype=torch.float64).scatter_add_(1, targets, correct)
    counts = torch.zeros_like(hits).scatter_add_(1, targets, torch.ones_like(correct))
    present = counts > 0
    return (hits / counts.clamp(min=1)).sum(1) / present.sum(1)


def replicate_means(folds_by_arm, n_classes, replicates=REPLICATES, seed=0):
    """``[replicates, arms]``: each replicate's mean UAR of every arm on the same drawn folds and utterances.

    ``folds_by_arm`` holds, per arm (a training), its ``FoldOutcomes`` in the same order (fold and seed)
    and on the same utterances. Each drawn copy of a fold draws its own utterances (a fold drawn twice is
    resampled twice), the same for every arm: what the arms share cancels in a paired comparison.
    """
    generator = torch.Generator().manual_seed(seed)
    n_folds = len(folds_by_arm[0])
    chosen = torch.randint(n_folds, (replicates, n_folds), generator=generator)
    sums = torch.zeros(replicates, len(folds_by_arm), dtype=torch.float64)
    for position in range(n_folds):
        for fold in range(n_folds):
            rows = chosen[:, position] == fold
            if rows.any():
                draws = stratified_draws(folds_by_arm[0][fold].targets, int(rows.sum()), generator)
                for arm, folds in enumerate(folds_by_arm):
                    sums[rows, arm] += drawn_uars(folds[fold], draws, n_classes)
    return sums / n_folds


def central_interval(draws):
    """The percentile interval holding the central ``LEVEL`` of the bootstrap replicates ``draws``: (low, high)."""
    return tuple(torch.quantile(draws, torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=torch.float64)).tolist())


def uar_interval(folds, n_classes, replicates=REPLICATES, seed=0):
    """Mean UAR over ``folds`` (``FoldOutcomes``) and its 95% two-level bootstrap interval (module docstring).

    Example
    -------
    >>> fold = FoldOutcomes(torch.tensor([0, 0, 1, 1]), torch.tensor([True, False, True, True]))
    >>> uar_interval([fold, fold], 2, replicates=200).mean
    0.75
    """
    mean = sum(fold_uar(fold, n_classes) for fold in folds) / len(folds)
    draws = replicate_means([folds], n_classes, replicates, seed)[:, 0]
    return Interval(mean, *central_interval(draws))


def paired_comparison(folds_a, folds_b, n_classes, replicates=REPLICATES, seed=0):
    """Mean UAR of A minus B on the same folds and utterances, its 95% interval and p-value (module docstring)."""
    if len(folds_a) != len(folds_b) or any(not torch.equal(a.targets, b.targets) for a, b in zip(folds_a, folds_b)):
        raise ValueError("A paired comparison needs both trainings on the same folds, seeds and utterances.")
    effect = sum(fold_uar(a, n_classes) - fold_uar(b, n_classes) for a, b in zip(folds_a, folds_b)) / len(folds_a)
    means = replicate_means([folds_a, folds_b], n_classes, replicates, seed)
    differences = means[:, 0] - means[:, 1]
    low, high = central_interval(differences)
    below, above = float((differences <= 0).double().mean()), float((differences >= 0).double().mean())
    return Comparison(effect, low, high, min(1.0, max(2 * min(below, above), 1 / replicates)))
