"""Intervals over speaker folds and paired comparisons, on hand-built folds whose answers are known."""

import pytest
import torch

from ser_adv_brain.evaluation.intervals import (
    FoldOutcomes,
    drawn_uars,
    fold_uar,
    paired_comparison,
    replicate_means,
    stratified_draws,
    uar_interval,
)

TARGETS = torch.tensor([0, 0, 1, 1])


def fold(*correct):
    return FoldOutcomes(TARGETS, torch.tensor(correct))


def test_the_mean_is_the_mean_of_the_folds_uars():
    folds = [fold(True, True, True, False), fold(True, False, False, False)]  # UARs .75 and .25
    assert uar_interval(folds, 2, replicates=200).mean == pytest.approx(0.5)


def test_the_interval_resamples_the_folds_not_only_their_utterances():
    """One fold right on everything, one wrong on everything: utterance draws alone would give [.5, .5]."""
    interval = uar_interval([fold(True, True, True, True), fold(False, False, False, False)], 2, replicates=400)
    assert (interval.low, interval.high) == (0.0, 1.0)


def test_the_interval_resamples_the_utterances_within_a_fold():
    """A single fold cannot vary by its folds: the spread comes from its utterances (UARs 0, .25, .5, .75 or 1)."""
    interval = uar_interval([fold(True, False, True, False)], 2, replicates=400)
    assert interval.mean == 0.5 and interval.low < 0.5 < interval.high


def test_a_stratified_draw_keeps_every_class_and_its_count():
    targets = torch.tensor([0, 1, 1, 2, 2, 2])
    drawn = targets[stratified_draws(targets, 20, torch.Generator().manual_seed(0))]
    for row in drawn:
        assert torch.equal(torch.bincount(row, minlength=3), torch.tensor([1, 2, 3]))


def test_the_uars_of_many_draws_at_once_are_each_draws_fold_uar():
    outcomes = FoldOutcomes(torch.tensor([0, 2, 2, 3, 3, 3]), torch.tensor([True, False, True, True, False, False]))
    draws = stratified_draws(outcomes.targets, 50, torch.Generator().manual_seed(1))
    assert drawn_uars(outcomes, draws, 5).tolist() == pytest.approx([fold_uar(outcomes, 5, row) for row in draws])


def test_a_paired_comparison_cancels_what_both_trainings_share():
    """A is right wherever B is, and on one more utterance in each fold; the folds differ a lot (A: 1 and .25,
    B: .75 and 0). Drawn apart, the folds would let B's good fold meet A's bad one (A minus B down to -.5);
    drawn together, no replicate can put A below B."""
    a = [fold(True, True, True, True), fold(True, False, False, False)]
    b = [fold(True, True, True, False), fold(False, False, False, False)]
    result = paired_comparison(a, b, 2, replicates=400)
    assert result.effect == pytest.approx(0.25)
    assert result.low >= 0 and result.high > 0
    same = paired_comparison(a, a, 2, replicates=200)
    assert (same.effect, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_a_paired_comparison_needs_the_same_utterances():
    with pytest.raises(ValueError, match="same folds, seeds and utterances"):
        paired_comparison(
            [fold(True, True, True, True)],
            [FoldOutcomes(torch.tensor([1, 1, 0, 0]), torch.ones(4, dtype=torch.bool))],
            2,
        )


def test_fold_uar_on_drawn_utterances():
    assert fold_uar(fold(True, False, True, True), 2, torch.tensor([0, 0, 2, 3])) == 1.0


def test_every_drawn_copy_of_a_fold_draws_its_own_utterances():
    """Four copies of one fold: drawing the folds changes nothing, and four independent draws of utterances make
    the interval half as wide as one fold's (1 / sqrt(4)). Were a fold drawn twice to share one draw of its
    utterances, it would be about two thirds as wide (sqrt(7 / 16): the copies' counts have E[sum c^2] = 7)."""
    many = FoldOutcomes(torch.arange(60) % 2, torch.arange(60) % 3 != 0)
    one, four = uar_interval([many], 2), uar_interval([many] * 4, 2)
    assert 0.42 < (four.high - four.low) / (one.high - one.low) < 0.58


def many_classes(seed):
    """A fold of 7 classes x 30 utterances, about 60% right: UARs fine-grained enough for percentiles."""
    generator = torch.Generator().manual_seed(seed)
    return FoldOutcomes(torch.arange(210) % 7, torch.rand(210, generator=generator) < 0.6)


def share(mask):
    return float(mask.double().mean())


def is_central_95_percent(draws, low, high):
    """``low`` and ``high`` are the 2.5th and 97.5th percentiles of ``draws`` (ties allowed on either side)."""
    return share(draws < low) <= 0.025 <= share(draws <= low) and share(draws > high) <= 0.025 <= share(draws >= high)


def test_the_interval_is_the_central_95_percent_of_the_replicates():
    folds = [many_classes(0), many_classes(1), many_classes(2)]
    interval = uar_interval(folds, 7)
    assert is_central_95_percent(replicate_means([folds], 7)[:, 0], interval.low, interval.high)
    # A paired comparison's interval and p-value come from the same replicates of both arms.
    other = [FoldOutcomes(f.targets, f.correct.roll(1)) for f in folds]
    means = replicate_means([folds, other], 7)
    differences = means[:, 0] - means[:, 1]
    result = paired_comparison(folds, other, 7)
    assert is_central_95_percent(differences, result.low, result.high)
    assert result.p_value == pytest.approx(2 * min(share(differences <= 0), share(differences >= 0)))
    assert 0.05 < result.p_value < 1


def test_a_difference_no_replicate_crosses_has_the_smallest_p_value_one_over_the_replicates():
    right, wrong = fold(True, True, True, True), fold(False, False, False, False)
    assert paired_comparison([right], [wrong], 2, replicates=400).p_value == 1 / 400


def test_the_same_folds_give_the_same_figures_every_time_with_seed_0_by_default():
    """The published intervals are reproduced from the entries: the bootstrap's draws are seeded, by 0 unless told."""
    folds, other = [many_classes(0), many_classes(1)], [many_classes(2), many_classes(3)]
    assert uar_interval(folds, 7) == uar_interval(folds, 7, seed=0) != uar_interval(folds, 7, seed=1)
    assert paired_comparison(folds, other, 7) == paired_comparison(folds, other, 7, seed=0)
    assert paired_comparison(folds, other, 7) != paired_comparison(folds, other, 7, seed=1)
